"""Test doubles of Azure for the ``aci`` and ``functions`` targets: Entra ID (tokens for a
service principal) and Azure Resource Manager (Microsoft.ContainerInstance container groups,
whose containers run for real on the local Docker engine, a little of
Microsoft.ContainerRegistry, and Microsoft.Web plans and function apps, which run no
container), on 127.0.0.1 over TLS with a test CA.

    from tests.doubles.azure import AzureDouble
    with AzureDouble(tmp_path, docker_environment) as azure:
        env = azure.env()  # REQUESTS_CA_BUNDLE, AZURE_CLIENT_*, DEPLOYER_AZURE_CLOUD, ...

or the session fixture ``azure_double`` (tests/doubles/azure/fixtures.py). Modules:
tls (CA, certificates, the HTTPS server), entra, contract (the official Swagger, with
bravado-core), arm (ARM's checks), resource_manager (routes), container_groups and
group_model (the service), containers (Docker), registries (ACR), web and web_contract
(Microsoft.Web: ``azure.web``), faults, errors.
"""

from tests.doubles.azure.fixtures import AzureDouble, azure_double

__all__ = ["AzureDouble", "azure_double"]
