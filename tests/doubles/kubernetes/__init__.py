"""A Kubernetes API server double on 127.0.0.1, reached through a kubeconfig.

- ``store.Store``: the objects, resourceVersions, events and garbage collection, and the
  Node ``double-node`` (``nodes``);
- ``apply``: server-side apply and ``metadata.managedFields``;
- ``validation``: defaulting and validation against the official OpenAPI schemas;
- ``server``: the HTTP API (discovery, CRUD, patch, watch, logs, auth, faults), with the
  pods/services proxy subresources (``proxy``);
- ``fixtures.KubernetesDouble``: the server, a kubeconfig, the test API, and (given
  ``docker_env``) the controller;
- ``controller`` (another module): Deployments run as Docker containers; Services get
  proxies, a LoadBalancer an address of its own (``services``).
"""
