"""Device and module twins: tags, desired and reported properties with ``$version`` and
``$metadata``, etags, versions, and IoT Hub's rules for twin documents (keys, values, depth
and size, from "Understand and use device twins in IoT Hub")."""

from __future__ import annotations

import base64
import copy
import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tests.doubles.iothub import errors

NEVER = "0001-01-01T00:00:00Z"
KEY_BYTES = 1024
STRING_BYTES = 4096
DEPTH = 10
SIZE_LIMITS = {"tags": 8 * 1024, "desired": 32 * 1024, "reported": 32 * 1024}
INT_RANGE = (-4503599627370496, 4503599627370495)


def now_utc() -> str:
    """ISO 8601 with 7 fractional digits, as the service writes times."""
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"


def check_document(section: str, document: Any, *, patch: bool = False) -> None:
    """IoT Hub's rules for tags and desired/reported properties; raises 400 ArgumentInvalid.
    In a patch, ``null`` removes a key."""
    if not isinstance(document, dict):
        raise errors.argument_invalid(f"{section} must be a JSON object")
    _check(section, document, 1, patch)
    size = _size(document)
    if size > SIZE_LIMITS[section]:
        raise errors.argument_invalid(
            f"The {section} document is {size} bytes, over the limit of "
            f"{SIZE_LIMITS[section]} bytes."
        )


def _check(where: str, node: dict[str, Any], depth: int, patch: bool) -> None:
    if depth > DEPTH:
        raise errors.argument_invalid(f"{where}: nesting deeper than {DEPTH} levels")
    for key, value in node.items():
        path = f"{where}.{key}"
        if len(key.encode()) > KEY_BYTES:
            raise errors.argument_invalid(f"{path}: a key is longer than {KEY_BYTES} bytes")
        bad = [c for c in key if c in ".$ " or ord(c) < 32 or 127 <= ord(c) < 160]
        if bad:
            raise errors.argument_invalid(
                f"Invalid character {bad[0]!r} in twin property name {key!r} ({where}); "
                "'.', '$', space and control characters are not allowed."
            )
        if isinstance(value, dict):
            _check(path, value, depth + 1, patch)
        elif isinstance(value, str) and len(value.encode()) > STRING_BYTES:
            raise errors.argument_invalid(
                f"{path}: the string is {len(value.encode())} bytes, over the limit of "
                f"{STRING_BYTES}."
            )
        elif isinstance(value, int) and not isinstance(value, bool):
            if not INT_RANGE[0] <= value <= INT_RANGE[1]:
                raise errors.argument_invalid(f"{path}: {value} is out of the integer range")
        elif value is None and not patch:
            raise errors.argument_invalid(f"{path}: null is only allowed in a patch")


def _size(node: Any) -> int:
    if isinstance(node, dict):
        return sum(len(k.encode()) + _size(v) for k, v in node.items())
    if isinstance(node, list):
        return sum(_size(v) for v in node)
    if isinstance(node, bool):
        return 4
    if isinstance(node, int | float):
        return 8
    if node is None:
        return 0
    return len(str(node).encode())


def merge(target: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """JSON merge patch: objects merge, ``null`` removes, anything else replaces."""
    result = copy.deepcopy(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, dict) and isinstance(result.get(key), dict):
            result[key] = merge(result[key], value)
        else:
            result[key] = copy.deepcopy(value)
    return result


def _metadata(
    document: dict[str, Any], old: dict[str, Any], old_meta: dict[str, Any], stamp: str
) -> dict[str, Any]:
    """``$metadata``: ``$lastUpdated`` at every level; what did not change keeps its own."""
    meta: dict[str, Any] = {"$lastUpdated": stamp}
    for key, value in document.items():
        previous = old.get(key) if isinstance(old, dict) else None
        previous_meta = old_meta.get(key) if isinstance(old_meta, dict) else None
        if previous == value and isinstance(previous_meta, dict):
            meta[key] = previous_meta
        elif isinstance(value, dict):
            meta[key] = _metadata(value, previous or {}, previous_meta or {}, stamp)
        else:
            meta[key] = {"$lastUpdated": stamp}
    return meta


@dataclass
class Properties:
    """One side of a twin's properties: the document, its ``$version`` and metadata."""

    document: dict[str, Any] = field(default_factory=dict)
    version: int = 1
    metadata: dict[str, Any] = field(default_factory=lambda: {"$lastUpdated": now_utc()})

    def replace(self, document: dict[str, Any]) -> None:
        """Set the whole document: a new ``$version``, even if nothing changed."""
        self.metadata = _metadata(document, self.document, self.metadata, now_utc())
        self.document = copy.deepcopy(document)
        self.version += 1

    def view(self) -> dict[str, Any]:
        return {
            **copy.deepcopy(self.document),
            "$metadata": self.metadata,
            "$version": self.version,
        }


@dataclass
class Twin:
    """A device twin (``module_id`` None) or a module twin."""

    device_id: str
    module_id: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)
    desired: Properties = field(default_factory=Properties)
    reported: Properties = field(default_factory=Properties)
    version: int = 1
    connection_state: str = "Disconnected"
    last_activity: str = NEVER
    status: str = "enabled"
    edge: bool = False
    device_etag: str = ""
    # at-scale configurations applied to this module twin: id -> {"status": "Applied"}
    configurations: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def etag(self) -> str:
        """A weak ETag of the twin (base64 of its version, as the service's look)."""
        return base64.b64encode(self.version.to_bytes(8, "big")).decode()

    def touch(self) -> None:
        self.version += 1

    def query_view(self) -> dict[str, Any]:
        """The document target conditions are evaluated against."""
        return {
            "deviceId": self.device_id,
            **({"moduleId": self.module_id} if self.module_id else {}),
            "tags": self.tags,
            "properties": {"desired": self.desired.document, "reported": self.reported.document},
            "capabilities": {"iotEdge": self.edge},
            "status": self.status,
            "connectionState": self.connection_state,
        }

    def view(self) -> dict[str, Any]:
        """The twin as GET /twins/... answers it."""
        twin: dict[str, Any] = {"deviceId": self.device_id}
        if self.module_id is not None:
            twin["moduleId"] = self.module_id
        twin |= {
            "etag": self.etag,
            "deviceEtag": self.device_etag,
            "status": self.status,
            "statusUpdateTime": NEVER,
            "connectionState": self.connection_state,
            "lastActivityTime": self.last_activity,
            "cloudToDeviceMessageCount": 0,
            "authenticationType": "sas",
            "version": self.version,
        }
        if self.module_id is None:
            twin["tags"] = copy.deepcopy(self.tags)
        twin["properties"] = {"desired": self.desired.view(), "reported": self.reported.view()}
        if self.module_id is None:
            twin["capabilities"] = {"iotEdge": self.edge}
            if self.edge:
                scope = hashlib.sha256(self.device_id.encode()).hexdigest()[:18]
                twin["deviceScope"] = f"ms-azure-iot-edge://{self.device_id}-{scope}"
        elif self.configurations:
            twin["configurations"] = copy.deepcopy(self.configurations)
        return twin


def device_etag(device_id: str) -> str:
    return base64.b64encode(hashlib.md5(device_id.encode()).hexdigest()[:12].encode()).decode()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))
