"""A function app's container logs from its SCM site (Kudu), where ``az webapp log tail``
and the portal's Log stream read them.

- The last lines: ``GET /api/logs/docker`` lists the app's container log files per instance
  (machine): ``<date>_<machine>_default_docker.log`` holds the container's own output (the
  Functions host, ``init()``'s prints, tracebacks) and ``<date>_<machine>_docker.log`` what
  the platform did with the container (pulling the image, starting it, a start that failed).
  The newest file of each kind per machine is read, and their lines are merged by their
  timestamps, so a failed start reads in order: the platform's line, then the container's.
- Following: ``GET /api/logstream`` is a chunked stream of every line written to the app's
  log files from then on (Kudu adds a heartbeat line after each minute of silence).

The SCM host is the app's own, read from its description (its ``Repository`` host name,
``<app>.scm.azurewebsites.net`` in Azure): deployer never builds it from a suffix, so an App
Service Environment or a sovereign cloud works as it is. Kudu takes a Microsoft Entra token
for Resource Manager's audience, from the same credential as every other call: no
publishing password is fetched or held, and the logs are readable where basic publishing
credentials are turned off (as Microsoft recommends). The identity needs a role that grants
``Microsoft.Web/sites/publish/Action`` (Website Contributor, or Contributor).

Requests go through azure-core's pipeline: its retry policy (429 with ``Retry-After``, 5xx),
its bearer-token policy (which refuses plain http) and its transport, which trusts
``REQUESTS_CA_BUNDLE``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from azure.core import PipelineClient
from azure.core.exceptions import AzureError, HttpResponseError
from azure.core.pipeline.policies import (
    BearerTokenCredentialPolicy,
    HeadersPolicy,
    ProxyPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.rest import HttpRequest

from deployer.azure.arm_errors import RETRY_OPTIONS
from deployer.errors import DeployFailed, UserError

if TYPE_CHECKING:
    from azure.core.credentials import TokenCredential

# A docker log line opens with its time: 2026-12-02T07:40:01.123456789Z
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?Z?\s")
# How long a stream may stay silent: Kudu writes a heartbeat line every minute.
STREAM_READ_TIMEOUT_S = 150


def scm_host(site: Any) -> str:
    """The SCM host of a site (azure-mgmt-web's ``Site``): its ``Repository`` host name."""
    for state in getattr(site, "host_name_ssl_states", None) or []:
        kind = getattr(state, "host_type", "")
        if str(getattr(kind, "value", kind)).lower() == "repository" and state.name:
            return str(state.name)
    for name in getattr(site, "enabled_host_names", None) or []:
        if ".scm." in str(name):
            return str(name)
    return ""


@dataclass(frozen=True)
class LogFile:
    machine: str
    path: str  # on the SCM host: /api/vfs/LogFiles/<name>
    platform: bool  # the platform's lines about the container, not the container's own
    updated: str


class KuduLogs:
    """The container logs of app ``app`` at SCM host ``host``."""

    def __init__(self, app: str, host: str, credential: TokenCredential, scope: str) -> None:
        self.app = app
        self.host = host
        policies = [
            HeadersPolicy(),
            UserAgentPolicy("deployer"),
            ProxyPolicy(),
            RetryPolicy(**RETRY_OPTIONS),
            BearerTokenCredentialPolicy(credential, scope),
        ]
        self.client: PipelineClient[Any, Any] = PipelineClient(f"https://{host}", policies=policies)

    def tail(self, lines: int) -> list[str]:
        """The last ``lines`` lines of the newest log files, merged by time."""
        files = self._files()
        machines = sorted({f.machine for f in files})
        merged: list[tuple[str, int, str]] = []
        for file in files:
            text = self._get(file.path, f"the log file {file.path}").text()
            prefix = f"[{file.machine}] " if len(machines) > 1 else ""
            key = ""
            for number, line in enumerate(text.splitlines()[-lines:]):
                key = _time_key(line) or key  # a traceback's lines keep the line's time
                merged.append((key, number, prefix + line))
        merged.sort(key=lambda entry: entry[0])  # stable: a file's own order within a time
        return [line for _, _, line in merged[-lines:]]

    def _files(self) -> list[LogFile]:
        listing = self._get("/api/logs/docker", "the list of log files").json()
        newest: dict[tuple[str, bool], LogFile] = {}
        for entry in listing if isinstance(listing, list) else []:
            name = str(entry.get("path") or entry.get("href") or "").rsplit("/", 1)[-1]
            if not name.endswith("_docker.log"):
                continue
            found = LogFile(
                machine=str(entry.get("machineName") or ""),
                path=urlsplit(str(entry.get("href") or "")).path or f"/api/vfs/LogFiles/{name}",
                platform=not name.endswith("_default_docker.log"),
                updated=str(entry.get("lastUpdated") or ""),
            )
            key = (found.machine, found.platform)
            if key not in newest or found.updated > newest[key].updated:
                newest[key] = found
        return list(newest.values())

    def follow(self, tail: int) -> Iterator[str]:
        """The last ``tail`` lines, then lines as Kudu streams them, until the caller stops
        or the stream ends."""
        yield from self.tail(tail)
        response = self._get("/api/logstream", "the log stream", stream=True)
        pending = b""
        try:
            for chunk in response.iter_bytes():
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    yield line.decode("utf-8", "replace").rstrip("\r")
        except AzureError as error:
            raise DeployFailed(f"the log stream of {self.app} ended: {error}") from error
        finally:
            response.close()

    def close(self) -> None:
        self.client.close()

    def _get(self, path: str, what: str, stream: bool = False) -> Any:
        request = HttpRequest("GET", self.client.format_url(path))
        try:
            response = self.client.send_request(
                request, stream=stream, read_timeout=STREAM_READ_TIMEOUT_S
            )
            response.raise_for_status()
        except HttpResponseError as error:
            raise self._refused(error, what) from error
        except AzureError as error:
            raise DeployFailed(f"cannot reach {self.host} for {what}: {error}") from error
        return response

    def _refused(self, error: HttpResponseError, what: str) -> Exception:
        status = error.status_code
        where = f"the SCM site of {self.app} ({self.host})"
        if status == 401:
            return UserError(
                f"{where} refused the token for {what}: sign in again ('az login', or "
                "azure/login in GitHub Actions) or check AZURE_CLIENT_* and the tenant"
            )
        if status == 403:
            return UserError(
                f"{where} denied {what}: the identity deployer runs as needs "
                "'Microsoft.Web/sites/publish/Action' on the app (the Website Contributor "
                'role, e.g. \'az role assignment create --role "Website Contributor" '
                "--assignee <its id> --scope <the app's id>')"
            )
        if status == 404:
            return DeployFailed(
                f"{where} has no {what} yet: the container has written no log (turn on "
                "'az webapp log config --docker-container-logging filesystem' if it is off)"
            )
        return DeployFailed(f"{where} answered {status} for {what}: {error.reason}")


def _time_key(line: str) -> str:
    """A sortable time of a log line (nine fractional digits), or "" if it has none."""
    found = _STAMP.match(line)
    if not found:
        return ""
    return f"{found[1]}.{(found[2] or '').ljust(9, '0')[:9]}"
