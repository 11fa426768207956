"""What ACI checks before it accepts a container group (the PUT fails at once, 400, and
nothing changes): the DNS name label is free, the cores fit the region's quota, the registry
credentials are well formed, and each image is accessible to them (the registry serves its
manifest), as ACI checks before it answers 201.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from tests.doubles.azure import errors
from tests.doubles.azure.containers import DockerRuntime, InaccessibleImage
from tests.doubles.azure.group_model import Group, GroupKey, registry_of, requested_cores
from tests.doubles.azure.registries import Registries

if TYPE_CHECKING:
    from tests.doubles.azure.container_groups import Settings

Auths = dict[str, dict[str, str] | None]  # registry server -> pull credentials


def check_dns_label(
    key: GroupKey, body: dict[str, Any], groups: Iterable[Group], settings: Settings
) -> None:
    label = body["properties"].get("ipAddress", {}).get("dnsNameLabel")
    if not label:
        return
    holders = [
        g.key
        for g in groups
        if g.key.folded() != key.folded()
        and g.properties.get("ipAddress", {}).get("dnsNameLabel", "").lower() == label.lower()
    ]
    if holders or label.lower() in settings.taken_dns_labels:
        raise errors.ArmError(
            400,
            "DnsNameLabelAlreadyTaken",
            f"The DNS name label '{label}' in container group '{key.name}' is not "
            "available. Try using a different label.",
        )


def check_quota(
    key: GroupKey, body: dict[str, Any], groups: Iterable[Group], settings: Settings
) -> None:
    limit = settings.core_quota
    if limit is None:
        return
    location = body["location"]
    usage = sum(
        requested_cores(g.body)
        for g in groups
        if g.key.subscription.lower() == key.subscription.lower()
        and g.key.folded() != key.folded()
        and g.body["location"].lower() == location.lower()
    )
    requested = requested_cores(body)
    if usage + requested > limit:
        raise errors.ArmError(
            400,
            "ContainerGroupQuotaReached",
            "Resource type 'Microsoft.ContainerInstance/containerGroups' container group "
            f"quota 'StandardCores' exceeded in region '{location}'. Limit: '{limit:g}', "
            f"Usage: '{usage:g}' Requested: '{requested:g}'.",
        )


def registry_auths(group: Group, registries: Registries, runtime: DockerRuntime) -> Auths:
    """Each registry's pull credentials, after ACI's checks of them (InaccessibleImage when
    the registry refuses an image to them)."""
    name = group.key.name
    identities = {
        i.lower() for i in (group.body.get("identity") or {}).get("userAssignedIdentities", {})
    }
    auths: Auths = {}
    for credential in group.properties.get("imageRegistryCredentials", []):
        server = credential["server"].lower()
        identity = credential.get("identity")
        if identity and (credential.get("username") or server in group.passwords):
            raise errors.ArmError(
                400,
                "AmbiguousImageResitryCredentialType",  # sic: the service's spelling
                "The registry credential type in the 'imageRegistryCredentials' of "
                f"container group '{name}' cannot be detected. Please set exactly one of "
                "username or identity",
            )
        if identity and identity.lower() not in identities:
            raise errors.ArmError(
                400,
                "InvalidImageRegistryIdentity",
                "The identity in the 'imageRegistryCredentials' of container group "
                f"'{name}' not found in container group identity list.",
            )
        if identity:
            # Without AcrPull the registry refuses the identity's token: a wrong credential
            auths[server] = registries.auth_for_identity(identity, server) or {
                "username": "managed-identity-without-acrpull",
                "password": uuid.uuid4().hex,
            }
        else:
            password = group.passwords.get(server, "")
            auths[server] = {"username": credential.get("username", ""), "password": password}
    for spec in group.container_specs():
        image = spec["properties"]["image"]
        try:
            runtime.check_access(image, auths.get(registry_of(image)))
        except InaccessibleImage:
            raise errors.inaccessible_image(image, name) from None
    return auths
