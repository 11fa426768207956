"""ARM's errors, as Resource Manager and the resource providers word them: the body is
always ``{"error": {"code": ..., "message": ...}}`` (the ``CloudError`` of every spec).

Sources of the codes and sentences (public reports of real responses; see the report of
the double in README.md): ARM's own (ResourceNotFound, ResourceGroupNotFound,
AuthenticationFailed, InvalidAuthenticationToken*, AuthorizationFailed,
MissingSubscriptionRegistration, SubscriptionRequestsThrottled) and ACI's (InaccessibleImage,
InvalidImageRegistryIdentity, AmbiguousImageResitryCredentialType [sic],
InvalidContainerGroupUpdate, DnsNameLabelAlreadyTaken, ContainerGroupQuotaReached,
InvalidRequestContent) and ACR's (UnAuthorizedForCredentialOperations).
"""

from __future__ import annotations

from typing import Any


class ArmError(Exception):
    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}
        self.details = details

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details:
            error["details"] = self.details
        return {"error": error}


def resource_not_found(resource_type: str, name: str, resource_group: str) -> ArmError:
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource '{resource_type}/{name}' under resource group '{resource_group}' was "
        "not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
    )


def resource_group_not_found(resource_group: str) -> ArmError:
    return ArmError(
        404, "ResourceGroupNotFound", f"Resource group '{resource_group}' could not be found."
    )


def subscription_not_found(subscription: str) -> ArmError:
    return ArmError(
        404, "SubscriptionNotFound", f"The subscription '{subscription}' could not be found."
    )


def invalid_subscription_id(subscription: str) -> ArmError:
    return ArmError(
        400,
        "InvalidSubscriptionId",
        f"The provided subscription identifier '{subscription}' is malformed or invalid.",
    )


def missing_registration(namespace: str) -> ArmError:
    message = (
        f"The subscription is not registered to use namespace '{namespace}'. See "
        "https://aka.ms/rps-not-found for how to register subscriptions."
    )
    details = [{"code": "MissingSubscriptionRegistration", "target": namespace, "message": message}]
    return ArmError(409, "MissingSubscriptionRegistration", message, details=details)


def authorization_failed(client_id: str, object_id: str, action: str, scope: str) -> ArmError:
    return ArmError(
        403,
        "AuthorizationFailed",
        f"The client '{client_id}' with object id '{object_id}' does not have authorization to "
        f"perform action '{action}' over scope '{scope}' or the scope is invalid. If access was "
        "recently granted, please refresh your credentials.",
    )


def throttled(subscription: str, object_id: str, retry_after: int, kind: str) -> ArmError:
    return ArmError(
        429,
        "SubscriptionRequestsThrottled",
        f"Number of '{kind}' requests for subscription '{subscription}' actor '{object_id}' "
        f"exceeded. Please try again after '{retry_after}' seconds after additional tokens are "
        "available. Refer to https://aka.ms/arm-throttling",
        headers={
            "Retry-After": str(retry_after),
            f"x-ms-ratelimit-remaining-subscription-{kind}s": "0",
        },
    )


def inaccessible_image(image: str, group: str) -> ArmError:
    return ArmError(
        400,
        "InaccessibleImage",
        f"The image '{image}' in container group '{group}' is not accessible. Please check "
        "the image and registry credential.",
    )


def invalid_update(group: str) -> ArmError:
    return ArmError(
        400,
        "InvalidContainerGroupUpdate",
        f"The updates on container group '{group}' are invalid. If you are going to update the "
        "os type, restart policy, network profile, CPU, memory or GPU resources for a container "
        "group, you must delete it first and then create a new one.",
    )
