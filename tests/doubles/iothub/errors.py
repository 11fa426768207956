"""IoT Hub's errors as its service API words them.

Most answers are ``{"Message": "ErrorCode:<Code>;<message>", "ExceptionMessage": "Tracking
ID:<id>-G:0-TimeStamp:<MM/dd/yyyy HH:mm:ss>"}`` with the header ``iothub-errorcode: <Code>``
(the shape every SDK parses: azure-iot-sdk-node's ``parseErrorBody`` splits ``Message`` on
``;`` and ``:``). Direct-method failures carry a JSON document inside ``Message`` instead
(``{"errorCode":404103,"trackingId":...,"message":"Timed out waiting for device to
connect.","info":{"timeout":"00:00:00"},"timestampUtc":...}``), as reported from real hubs.

Codes and numbers: Microsoft.Azure.Devices' ``IotHubServiceErrorCode`` (azure-iot-sdk-csharp)
and the IoT Hub "troubleshoot error codes" page; sentences: real responses quoted in public
issues where there is one (IotHubUnauthorizedAccess, ConfigurationAlreadyExists,
DeviceNotOnline), the double's own words otherwise (README lists which).
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

NUMBERS = {
    "InvalidProtocolVersion": 400001,
    "ArgumentInvalid": 400004,
    "ArgumentNull": 400005,
    "IotHubFormatError": 400006,
    "IotHubUnauthorizedAccess": 401002,
    "DeviceNotFound": 404001,
    "ModuleNotFound": 404010,
    "DeviceNotOnline": 404103,
    "DeviceAlreadyExists": 409001,
    "PreconditionFailed": 412001,
    "ThrottlingException": 429001,
    "ServerError": 500001,
    "ServiceUnavailable": 503001,
}
REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    404: "NotFound",
    409: "Conflict",
    412: "PreconditionFailed",
    429: "TooManyRequests",
    500: "InternalServerError",
    503: "ServiceUnavailable",
}


def tracking() -> tuple[str, str]:
    """A tracking id and its timestamp, in the service's format."""
    now = datetime.now(UTC)
    stamp = now.strftime("%m/%d/%Y %H:%M:%S")
    return f"{uuid.uuid4().hex}-G:0-TimeStamp:{stamp}", now.isoformat().replace("+00:00", "Z")


class HubError(Exception):
    """An error answer: status, IoT Hub's error code and message, extra headers."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        headers: dict[str, str] | None = None,
        *,
        nested: dict[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.headers = {"iothub-errorcode": code, **(headers or {})}
        self.nested = nested  # for direct methods: the JSON document inside Message
        self.detail = detail  # why, for tests (not in the body, as the service's logs)

    def body(self) -> dict[str, Any]:
        tracking_id, timestamp = tracking()
        if self.nested is not None:
            inner = {
                "errorCode": NUMBERS.get(self.code, 0),
                "trackingId": tracking_id,
                "message": self.message,
                **self.nested,
                "timestampUtc": timestamp,
            }
            return {"Message": json.dumps(inner, separators=(",", ":")), "ExceptionMessage": ""}
        return {
            "Message": f"ErrorCode:{self.code};{self.message}",
            "ExceptionMessage": f"Tracking ID:{tracking_id}",
        }


def unauthorized(detail: str) -> HubError:
    # The real body's Message is "ErrorCode:IotHubUnauthorizedAccess;Unauthorized"; the
    # reason (invalid signature, expired token, unknown policy) is only in ExceptionMessage
    # and the service's logs. The double keeps the Message and puts the reason in the
    # error's ``detail`` (``IoTHubDouble.requests`` records it).
    return HubError(401, "IotHubUnauthorizedAccess", "Unauthorized", detail=detail)


def argument_invalid(message: str) -> HubError:
    return HubError(400, "ArgumentInvalid", message)


def device_not_found(device_id: str) -> HubError:
    return HubError(404, "DeviceNotFound", f"Device {device_id} not registered")


def module_not_found(device_id: str, module_id: str) -> HubError:
    return HubError(404, "ModuleNotFound", f"Module {module_id} on device {device_id} not found")


def configuration_not_found(config_id: str) -> HubError:
    return HubError(
        404, "ConfigurationNotFound", f"Configuration with id '{config_id}' does not exist"
    )


def configuration_exists(config_id: str) -> HubError:
    # As reported from a real hub (Azure/iotedge#6702), "exist" [sic].
    return HubError(
        409,
        "ConfigurationAlreadyExists",
        f"Configuration with id '{config_id}' already exist on IotHub.",
    )


def precondition_failed(what: str) -> HubError:
    return HubError(412, "PreconditionFailed", f"Precondition failed: {what}")


def device_not_online(timeout_s: int) -> HubError:
    minutes, seconds = divmod(timeout_s, 60)
    hours, minutes = divmod(minutes, 60)
    return HubError(
        404,
        "DeviceNotOnline",
        "Timed out waiting for device to connect.",
        nested={"info": {"timeout": f"{hours:02d}:{minutes:02d}:{seconds:02d}"}},
    )


def throttled(retry_after: int) -> HubError:
    return HubError(
        429,
        "ThrottlingException",
        "Throttling: the hub's request rate for this operation was exceeded. Retry after "
        f"{retry_after} seconds.",
        {"Retry-After": str(retry_after)},
    )


def server_error(status: int) -> HubError:
    if status == 503:
        return HubError(503, "ServiceUnavailable", "Service is temporarily unavailable.")
    return HubError(status, "ServerError", "Internal server error.")
