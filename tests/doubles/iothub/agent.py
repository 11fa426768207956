"""A simulated IoT Edge device: its edge agent, as a thread beside the hub.

The agent watches its ``$edgeAgent`` twin's desired properties. When their ``$version``
changes it reads the manifest with deployer's own ``read_manifest`` and converges the
device with deployer's ``Engine`` (deployer/targets/iot_edge/engine.py: the custom modules
run as containers on the local Docker engine), then reports what a real edgeAgent reports
in its twin's reported properties (Microsoft's "Properties of the IoT Edge agent and IoT
Edge hub module twins"), every ``interval`` seconds:

- ``lastDesiredVersion`` once the manifest was applied (after the images were pulled, as
  the real agent does) and ``lastDesiredStatus`` {code, description}: 200, 400 (the
  manifest does not read), 412 (schema version), 417 (empty desired properties), 500 (a
  module's image did not pull or its container was not created: the agent's plan failed,
  and it tries again every ``retry_s``);
- ``runtime`` (type, settings without the registry credentials, platform), ``systemModules``,
  ``modules.<name>`` (the desired settings, and runtimeStatus, exitCode, statusDescription,
  lastStartTimeUtc, lastExitTimeUtc, restartCount, lastRestartTimeUtc as the engine sees the
  container), ``deviceHealth``, ``configurationHealth``.

edgeAgent and edgeHub themselves are not run (their images are not reachable here): the
agent reports them ``running``, as they would be on a healthy device, and edgeHub's twin
reports that it read its own desired properties.

The agent answers the direct methods of ``$edgeAgent``: ``ping`` and ``GetModuleLogs`` (the
engine's container logs; schema of Azure/iotedge doc/built-in-logs-pull.md). An offline
device (``IoTHubDouble.device_offline``) neither applies nor reports, and answers no
method; its containers keep running, as a real device's do.
"""

from __future__ import annotations

import base64
import contextlib
import copy
import gzip
import json
import re
import threading
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tests.doubles.iothub.hub import Hub
from tests.doubles.iothub.twins import NEVER

REPORTED_SCHEMA = "1.1"
PLATFORM = {"os": "linux", "architecture": "x86_64", "version": "1.5.0"}
VERSION = {"version": "1.5.0", "build": "iothub-double", "commit": "iothub-double"}
TEXT_LIMIT = 2048  # a twin string holds 4 KB: descriptions are cut to half of it
SUPPORTED_SCHEMAS = ("1.0", "1.1")
LOG_LIMIT = 127_000  # GetModuleLogs' payload limit (128 KB less the agent's margin)


def stamp() -> str:
    now = datetime.now(UTC)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond:06d}0Z"


class EdgeAgent:
    """One device's agent. ``engine`` is an ``Engine`` (or a stand-in with the same API:
    ``apply(manifest)``, ``status()``, ``logs(module, tail)``, ``remove_all()``);
    ``read_manifest`` is the engine module's."""

    def __init__(
        self,
        hub: Hub,
        device_id: str,
        engine: Any,
        read_manifest: Callable[[Any], Any],
        *,
        interval: float = 0.5,
        retry_s: float = 5.0,
    ) -> None:
        self.hub = hub
        self.device_id = device_id
        self.engine = engine
        self.read_manifest = read_manifest
        self.interval = interval
        self.retry_s = retry_s
        self.errors: list[str] = []  # what went wrong in the agent itself (for tests)
        self._log: list[str] = []  # the agent's own log, in the recommended format
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"edge-agent-{device_id}", daemon=True
        )
        self._applied_version: int | None = None
        self._applied: dict[str, Any] = {}  # the modulesContent last applied
        self._status = (0, "")
        self._started = stamp()
        self._last_attempt = 0.0
        self._busy = threading.Lock()  # held while the engine works

    # Life cycle -----------------------------------------------------------------------------
    def start(self) -> EdgeAgent:
        self._log_line(6, "Starting module management agent (simulated by the IoT Hub double)")
        with self.hub.lock:
            self.hub.device(self.device_id).handlers["$edgeAgent"] = self
        self.hub.set_connection(self.device_id, runtime=True)
        self._thread.start()
        return self

    def stop(self, *, remove: bool = True) -> None:
        self._stop.set()
        with self.hub.changed:
            self.hub.changed.notify_all()
        self._thread.join(timeout=120)
        with contextlib.suppress(Exception):
            self.hub.set_connection(self.device_id, runtime=False)
        if remove:
            with self._busy:
                self.engine.remove_all()

    # The loop -------------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._turn()
            except Exception:  # the agent keeps going, as the real one does
                self.errors.append(traceback.format_exc())
                self._log_line(3, f"Agent loop error: {self.errors[-1].splitlines()[-1]}")
            with self.hub.changed:
                self.hub.changed.wait(timeout=self.interval)

    def _turn(self) -> None:
        with self.hub.lock:
            device = self.hub.device(self.device_id)
            if device.offline:
                return
        version, content = self.hub.desired(self.device_id)
        retry = self._status[0] == 500 and _now() - self._last_attempt >= self.retry_s
        if version != self._applied_version or content != self._applied or retry:
            self._apply(version, content)
        with self._busy:
            statuses = self.engine.status() if self._applied_version is not None else {}
        self.hub.report(self.device_id, "$edgeAgent", self._agent_report(statuses))
        self.hub.report(self.device_id, "$edgeHub", self._hub_report())

    def _apply(self, version: int, content: dict[str, Any]) -> None:
        self._last_attempt = _now()
        desired = content.get("$edgeAgent", {}).get("properties.desired", {})
        if not desired:
            self._status = (417, "The device's deployment configuration is not set")
            self._applied_version, self._applied = version, copy.deepcopy(content)
            self._log_line(3, self._status[1])
            return
        schema = str(desired.get("schemaVersion", ""))
        if schema.split(".", 1)[0] != "1" or schema not in SUPPORTED_SCHEMAS:
            self._status = (412, f"Desired properties schema version {schema!r} is not supported")
            self._applied_version, self._applied = version, copy.deepcopy(content)
            self._log_line(3, self._status[1])
            return
        try:
            manifest = self.read_manifest(content)
        except Exception as exc:  # the manifest does not read: ConfigFormatError
            self._status = (400, _clip(str(exc)))
            self._applied_version, self._applied = version, copy.deepcopy(content)
            self._log_line(3, f"Invalid deployment configuration: {exc}")
            return
        self._log_line(6, f"Plan execution started for deployment {version}")
        with self._busy:
            statuses = self.engine.apply(manifest)
        # A module that failed without ever starting: its image did not pull or its
        # container was not created, a step of the agent's plan that failed.
        failed = [
            f"module {name}: {status.status_description}"
            for name, status in sorted((statuses or {}).items())
            if status.runtime_status == "failed" and status.last_start_time is None
        ]
        self._status = (500, _clip("; ".join(failed))) if failed else (200, "")
        for line in failed:
            self._log_line(3, f"Executing command failed: {line}")
        self.hub.sync_module_identities(self.device_id, list(manifest.modules))
        self._log_line(6, f"Plan execution ended for deployment {version}")
        self._applied_version, self._applied = version, copy.deepcopy(content)

    # Reports --------------------------------------------------------------------------------
    def _agent_report(self, statuses: dict[str, Any]) -> dict[str, Any]:
        desired = self._applied.get("$edgeAgent", {}).get("properties.desired", {})
        code, description = self._status
        report: dict[str, Any] = {"schemaVersion": REPORTED_SCHEMA, "version": dict(VERSION)}
        if self._applied_version is not None:
            report["lastDesiredVersion"] = self._applied_version
            report["lastDesiredStatus"] = {"code": code} | (
                {"description": description} if description else {}
            )
        runtime = copy.deepcopy(desired.get("runtime", {"type": "docker", "settings": {}}))
        # The agent reports no registry credentials (an empty object, as on real devices).
        settings = runtime.setdefault("settings", {})
        if "registryCredentials" in settings:
            settings["registryCredentials"] = {}
        runtime["platform"] = dict(PLATFORM)
        report["runtime"] = runtime
        system = desired.get("systemModules", {})
        # Not really run (their images are not reachable here): reported as a healthy
        # device's would be.
        report["systemModules"] = {
            "edgeAgent": {
                **copy.deepcopy(system.get("edgeAgent", {"type": "docker", "settings": {}})),
                "runtimeStatus": "running",
                "exitCode": 0,
                "lastStartTimeUtc": self._started,
                "imagePullPolicy": "on-create",
            },
            "edgeHub": {
                **copy.deepcopy(system.get("edgeHub", {"type": "docker", "settings": {}})),
                "runtimeStatus": "running",
                "exitCode": 0,
                "statusDescription": "running",
                "lastStartTimeUtc": self._started,
                "lastExitTimeUtc": NEVER,
                "restartCount": 0,
                "lastRestartTimeUtc": NEVER,
                "imagePullPolicy": "on-create",
            },
        }
        modules: dict[str, Any] = {}
        for name, spec in (desired.get("modules") or {}).items():
            status = statuses.get(name)
            entry = copy.deepcopy(spec) if isinstance(spec, dict) else {}
            if status is None:
                entry |= {
                    "runtimeStatus": "unknown",
                    "exitCode": 0,
                    "statusDescription": "not created",
                    "lastStartTimeUtc": NEVER,
                    "lastExitTimeUtc": NEVER,
                    "restartCount": 0,
                    "lastRestartTimeUtc": NEVER,
                }
            else:
                restarted = status.restart_count > 0 and status.last_start_time
                entry |= {
                    "runtimeStatus": status.runtime_status,
                    "exitCode": status.exit_code if status.exit_code is not None else 0,
                    "statusDescription": _clip(status.status_description),
                    "lastStartTimeUtc": status.last_start_time or NEVER,
                    "lastExitTimeUtc": status.last_exit_time or NEVER,
                    "restartCount": status.restart_count,
                    "lastRestartTimeUtc": status.last_start_time if restarted else NEVER,
                }
            modules[name] = entry
        report["modules"] = modules
        healthy = all(m["runtimeStatus"] in ("running", "stopped") for m in modules.values())
        report["deviceHealth"] = "healthy" if healthy else "unhealthy"
        with self.hub.lock:
            agent = self.hub.device(self.device_id).modules["$edgeAgent"]
            applied = [c for c, s in agent.configurations.items() if s.get("status") == "Applied"]
        if applied:
            report["configurationHealth"] = {c: {"health": report["deviceHealth"]} for c in applied}
        return report

    def _hub_report(self) -> dict[str, Any]:
        """edgeHub's twin (not really run): it read its desired properties."""
        with self.hub.lock:
            hub_twin = self.hub.device(self.device_id).modules["$edgeHub"]
            version = hub_twin.desired.version
            has_desired = bool(hub_twin.desired.document)
        report: dict[str, Any] = {"schemaVersion": "1.2", "clients": {}}
        if self._applied_version is not None:
            report["lastDesiredVersion"] = version
            report["lastDesiredStatus"] = {"code": 200 if has_desired else 417}
        return report

    # Direct methods -------------------------------------------------------------------------
    def invoke(self, method: str, payload: Any) -> tuple[int, Any]:
        if method == "ping":
            return 200, None
        if method == "GetModuleLogs":
            return self._module_logs(payload)
        return 404, {"message": f"Command '{method}' not found"}

    def _module_logs(self, payload: Any) -> tuple[int, Any]:
        if not isinstance(payload, dict):
            return 400, {"message": "Request payload not found"}
        schema = str(payload.get("schemaVersion", ""))
        if schema.split(".", 1)[0] != "1":
            return 400, {"message": f"Unsupported schema version {schema!r} (expected 1.0)"}
        encoding = payload.get("encoding", "none")
        content_type = payload.get("contentType", "text")
        if encoding not in ("none", "gzip") or content_type not in ("text", "json"):
            return 400, {"message": "encoding is 'gzip' or 'none', contentType 'json' or 'text'"}
        items = payload.get("items")
        if not isinstance(items, list) or not items:
            return 400, {"message": "items: at least one {id, filter} is required"}
        with self._busy:
            names = [*self.engine.status(), "edgeAgent", "edgeHub"]
        answers: list[dict[str, Any]] = []
        size = 0
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("id"), str):
                return 400, {"message": "each item has an id (a regular expression)"}
            try:
                pattern = re.compile(item["id"])
            except re.error as exc:
                return 400, {"message": f"id {item['id']!r} is not a regular expression: {exc}"}
            log_filter = item.get("filter") or {}
            for name in names:
                if not pattern.search(name) or any(a["id"] == name for a in answers):
                    continue
                lines = self._lines(name, log_filter)
                if content_type == "json":
                    text = json.dumps(
                        [{"id": name, "stream": "stdout", "text": line} for line in lines]
                    )
                else:
                    text = "".join(f"{line}\n" for line in lines)
                if encoding == "gzip":
                    data = base64.b64encode(gzip.compress(text.encode())).decode()
                    answers.append({"id": name, "payloadBytes": data})
                    size += len(data)
                else:
                    answers.append({"id": name, "payload": text})
                    size += len(text)
        if size > LOG_LIMIT:
            return 400, {
                "message": f"The payload is too large for a direct method. GetModuleLogs "
                f"supports up to {LOG_LIMIT} bytes of logs. The current request returned "
                f"{size} bytes."
            }
        return 200, answers

    def _lines(self, name: str, log_filter: dict[str, Any]) -> list[str]:
        tail = log_filter.get("tail")
        if name == "edgeAgent":
            lines = list(self._log)
        elif name == "edgeHub":
            lines = ["<6> edgeHub is not run by the IoT Hub double (its image is not reachable)"]
        else:
            with self._busy:
                lines = list(self.engine.logs(name, tail if isinstance(tail, int) else 10_000))
        if isinstance(log_filter.get("regex"), str):
            expression = re.compile(log_filter["regex"])
            lines = [line for line in lines if expression.search(line)]
        level = log_filter.get("loglevel")
        if isinstance(level, int):
            lines = [line for line in lines if _level(line) is None or _level(line) <= level]
        if isinstance(tail, int):
            lines = lines[-tail:] if tail > 0 else []
        return lines

    def _log_line(self, level: int, text: str) -> None:
        now = datetime.now(UTC)
        when = now.strftime("%Y-%m-%d %H:%M:%S.") + f"{now.microsecond // 1000:03d} +00:00"
        tag = {3: "ERR", 4: "WRN", 6: "INF"}.get(level, "INF")
        self._log.append(f"<{level}> {when} [{tag}] - {text}")


def _clip(text: str) -> str:
    return text if len(text.encode()) <= TEXT_LIMIT else text[: TEXT_LIMIT // 4] + " [...]"


def _level(line: str) -> int | None:
    match = re.match(r"^<(\d)>", line)
    return int(match[1]) if match else None


def _now() -> float:
    import time

    return time.monotonic()
