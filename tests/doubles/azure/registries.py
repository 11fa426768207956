"""Azure Container Registry, management side only (small): the registries a test declares,
``GET .../registries/{name}`` (its ``loginServer`` and ``adminUserEnabled``) and
``POST .../registries/{name}/listCredentials`` (the admin user and its two passwords, as in
RegistryListCredentials.json), plus which managed identities have AcrPull on which registry
(what ACI checks when a group pulls with ``imageRegistryCredentials[].identity``).

The registry itself is a real one (dev-env's, on 127.0.0.1:5000): a declared registry
carries the credentials the double pulls with on an identity's behalf, and the admin
credentials it hands out; both are the real registry's, given by the test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tests.doubles.azure.errors import ArmError, resource_not_found

REGISTRY_TYPE = "Microsoft.ContainerRegistry/registries"


@dataclass
class Registry:
    subscription: str
    resource_group: str
    name: str
    login_server: str  # e.g. 127.0.0.1:5000
    username: str  # the admin user (and what identities' pulls use)
    passwords: tuple[str, str]
    admin_enabled: bool = True
    location: str = "westeurope"

    @property
    def id(self) -> str:
        return (
            f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
            f"/providers/{REGISTRY_TYPE}/{self.name}"
        )

    def resource(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "type": REGISTRY_TYPE,
            "location": self.location,
            "tags": {},
            "sku": {"name": "Basic", "tier": "Basic"},
            "properties": {
                "loginServer": self.login_server,
                "adminUserEnabled": self.admin_enabled,
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
            },
        }

    def credentials(self) -> dict[str, Any]:
        if not self.admin_enabled:
            raise ArmError(
                400,
                "UnAuthorizedForCredentialOperations",
                f"Cannot perform credential operations for {self.id} as admin user is "
                "disabled. Kindly enable admin user as per docs: https://docs.microsoft.com/"
                "en-us/azure/container-registry/container-registry-authentication#admin-account",
            )
        return {
            "username": self.username,
            "passwords": [
                {"name": "password", "value": self.passwords[0]},
                {"name": "password2", "value": self.passwords[1]},
            ],
        }

    def pull_auth(self) -> dict[str, str]:
        return {"username": self.username, "password": self.passwords[0]}


@dataclass
class Registries:
    by_key: dict[tuple[str, str, str], Registry] = field(default_factory=dict)
    acr_pull: set[tuple[str, str]] = field(default_factory=set)  # (identity id, login server)

    def add(self, registry: Registry) -> Registry:
        key = (registry.subscription, registry.resource_group, registry.name)
        self.by_key[(key[0].lower(), key[1].lower(), key[2].lower())] = registry
        return registry

    def find(self, subscription: str, resource_group: str, name: str) -> Registry:
        found = self.by_key.get((subscription.lower(), resource_group.lower(), name.lower()))
        if found is None:
            raise resource_not_found(REGISTRY_TYPE, name, resource_group)
        return found

    def grant_acr_pull(self, identity_id: str, login_server: str) -> None:
        self.acr_pull.add((identity_id.lower(), login_server.lower()))

    def revoke_acr_pull(self, identity_id: str, login_server: str) -> None:
        self.acr_pull.discard((identity_id.lower(), login_server.lower()))

    def auth_for_identity(self, identity_id: str, login_server: str) -> dict[str, str] | None:
        """The credentials ACI's pull would get for this identity: None without AcrPull."""
        if (identity_id.lower(), login_server.lower()) not in self.acr_pull:
            return None
        for registry in self.by_key.values():
            if registry.login_server.lower() == login_server.lower():
                return registry.pull_auth()
        return None
