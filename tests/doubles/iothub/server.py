"""The service API over HTTPS: each request is recorded, authenticated (SAS or bearer),
checked against the faults a test injected, validated against the contract, then served
by the hub; each answer is checked against the contract's response schema (a mismatch is
the double's bug, kept in ``Service.errors``)."""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tests.doubles.azure.tls import JsonHandler
from tests.doubles.iothub import errors
from tests.doubles.iothub.auth import Policy, authenticate
from tests.doubles.iothub.contract import ContractViolation, Operation, iothub_contract
from tests.doubles.iothub.hub import Hub


@dataclass
class Rule:
    method: str
    path: str  # a regular expression, searched in the decoded path and in the path as sent
    action: str = "fail"  # "fail" or "hold"
    status: int = 500
    times: int = 1
    retry_after: int = 1
    code: str = ""
    message: str = ""
    matched: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    seen: int = 0

    def matches(self, method: str, paths: tuple[str, str]) -> bool:
        if self.seen >= self.times or method != self.method.upper():
            return False
        return any(re.search(self.path, p) for p in paths)

    def error(self) -> errors.HubError:
        if self.status == 429:
            error = errors.throttled(self.retry_after)
        elif self.status >= 500:
            error = errors.server_error(self.status)
            if self.status == 503:
                error.headers["Retry-After"] = str(self.retry_after)
        else:
            error = errors.HubError(self.status, "GenericError", "Injected by the test.")
        if self.code:
            error.code = error.headers["iothub-errorcode"] = self.code
        if self.message:
            error.message = self.message
        return error


@dataclass
class Recorded:
    method: str
    path: str  # decoded, without the query
    query: dict[str, str]
    headers: dict[str, str]
    body: Any  # the JSON body, parsed (None without one)
    target: str  # the path and query as sent
    status: int = 0
    operation: str = ""  # the contract's operationId ("" if none)
    error_code: str = ""  # IoT Hub's error code when the answer is an error
    detail: str = ""  # why (an authentication failure's reason)


class Service:
    """What the handler serves: the hub, its policies and tokens, faults, records."""

    def __init__(self, hub: Hub, policies: dict[str, Policy]) -> None:
        self.hub = hub
        self.policies = policies
        self.bearer_tokens: set[str] = set()
        self.clock_offset = 0.0
        self.rules: list[Rule] = []
        self.requests: list[Recorded] = []
        self.errors: list[str] = []  # answers that break the contract (the double's bugs)
        self.lock = threading.Lock()

    def add_rule(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def release_all(self) -> None:
        for rule in self.rules:
            rule.released.set()

    def serve(
        self, method: str, target: str, headers: Any, body: bytes
    ) -> tuple[int, Any, dict[str, str]]:
        parts = urlsplit(target)
        segments = [unquote(s) for s in parts.path.strip("/").split("/")] if parts.path else []
        path = "/" + "/".join(segments)
        query = {k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        try:
            document = json.loads(body) if body else None
        except ValueError:
            document = None
        record = Recorded(method, path, query, dict(headers.items()), document, target)
        with self.lock:
            self.requests.append(record)
        try:
            authenticate(
                headers.get("Authorization", ""),
                self.hub.host,
                self.policies,
                self.bearer_tokens,
                time.time() + self.clock_offset,
            )
            self._faults(method, (path, parts.path))
            operation = iothub_contract().validate(method, segments, query, headers, body)
            if operation is None:
                raise errors.HubError(
                    404, "NotFound", f"No operation of the service API at {method} {path}."
                )
            record.operation = operation.operation_id
            status, answer, extra = self._route(operation, document)
        except ContractViolation as exc:
            status, answer, extra = 400, None, {}
            error = errors.HubError(400, exc.code, exc.message)
            status, answer, extra = error.status, error.body(), error.headers
            record.error_code = exc.code
        except errors.HubError as exc:
            status, answer, extra = exc.status, exc.body(), exc.headers
            record.error_code, record.detail = exc.code, exc.detail
        record.status = status
        if record.operation and not record.error_code:
            problem = iothub_contract().check_response(record.operation, status, answer)
            if problem:
                self.errors.append(problem)
        return status, answer, extra

    def _faults(self, method: str, paths: tuple[str, str]) -> None:
        with self.lock:
            rule = next((r for r in self.rules if r.matches(method, paths)), None)
            if rule is not None:
                rule.seen += 1
        if rule is None:
            return
        rule.matched.set()
        if rule.action == "hold":
            rule.released.wait()
            return
        raise rule.error()

    def _route(self, operation: Operation, body: Any) -> tuple[int, Any, dict[str, str]]:
        hub = self.hub
        p = operation.params
        name = operation.operation_id
        if_match = p.get("If-Match")
        if name == "Configuration_Get":
            found = hub.get_configuration(p["id"])
            return 200, found, _etag(found)
        if name == "Configuration_CreateOrUpdate":
            status, found = hub.put_configuration(p["id"], body, if_match)
            return status, found, _etag(found)
        if name == "Configuration_Delete":
            hub.delete_configuration(p["id"], if_match)
            return 204, None, {}
        if name == "Configuration_GetConfigurations":
            return 200, hub.list_configurations(p.get("top")), {}
        if name == "Configuration_TestQueries":
            return 200, hub.test_queries(body), {}
        if name == "Configuration_ApplyOnEdgeDevice":
            hub.apply_content(p["id"], body)
            return 204, None, {}
        if name == "Devices_GetIdentity":
            return 200, hub.device_identity(p["id"]), {}
        if name == "Devices_GetDevices":
            return 200, hub.list_devices(p.get("top")), {}
        if name == "Devices_GetTwin":
            twin = hub.twin_view(p["id"])
            return 200, twin, _etag(twin)
        if name in ("Devices_UpdateTwin", "Devices_ReplaceTwin"):
            replace = name == "Devices_ReplaceTwin"
            twin = hub.update_twin(p["id"], None, body, if_match, replace=replace)
            return 200, twin, _etag(twin)
        if name == "Modules_GetTwin":
            twin = hub.twin_view(p["id"], p["mid"])
            return 200, twin, _etag(twin)
        if name in ("Modules_UpdateTwin", "Modules_ReplaceTwin"):
            replace = name == "Modules_ReplaceTwin"
            twin = hub.update_twin(p["id"], p["mid"], body, if_match, replace=replace)
            return 200, twin, _etag(twin)
        if name == "Modules_GetModulesOnDevice":
            return 200, hub.list_modules(p["id"]), {}
        if name == "Modules_GetIdentity":
            return 200, hub.module_identity(p["id"], p["mid"]), {}
        if name == "Devices_InvokeMethod":
            return 200, hub.invoke(p["deviceId"], None, body), {}
        if name == "Modules_InvokeMethod":
            return 200, hub.invoke(p["deviceId"], p["moduleId"], body), {}
        raise errors.HubError(
            501, "NotImplemented", f"The IoT Hub double does not implement {name}."
        )


def _etag(document: dict[str, Any]) -> dict[str, str]:
    etag = document.get("etag")
    return {"ETag": f'"{etag}"'} if etag else {}


class ServiceHandler(JsonHandler):
    """Hands every request to the service (``server.app``)."""

    def _serve(self) -> None:
        status, body, headers = self.server.app.serve(  # type: ignore[attr-defined]
            self.command, self.path, self.headers, self.read_body()
        )
        self.answer(status, body, {"x-ms-request-id": _request_id(), **headers})

    do_GET = do_PUT = do_PATCH = do_DELETE = do_POST = _serve


def _request_id() -> str:
    import uuid

    return str(uuid.uuid4())
