"""A Kubernetes API server double on 127.0.0.1, reached through a kubeconfig.

- ``store.Store``: the objects, resourceVersions, events and garbage collection;
- ``apply``: server-side apply and ``metadata.managedFields``;
- ``validation``: defaulting and validation against the official OpenAPI schemas;
- ``server``: the HTTP API (discovery, CRUD, patch, watch, logs, auth, faults);
- ``fixtures.KubernetesDouble``: the server, a kubeconfig, the test API;
- ``controller`` (another module): Deployments run as Docker containers.
"""
