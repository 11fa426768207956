"""Kudu, App Service's SCM site, for the function apps of the Microsoft.Web double: the two
log endpoints ``az webapp log tail`` and the portal's Log stream read.

Each function app gets its own SCM site, as in Azure (``<app>.scm.azurewebsites.net``): here
an HTTPS server on 127.0.0.1 with the test CA, started when the app is created and stopped
when it is deleted. The ARM double reports its address as the app's ``Repository`` host name
(``hostNameSslStates``), where Azure reports ``<app>.scm.azurewebsites.net``; a client that
takes the SCM host from the app's own description, as the Azure CLI and the portal do,
reaches it unchanged. It serves:

- ``GET /api/logs/docker``: the app's container log files, as Kudu lists them
  (``[{"machineName", "lastUpdated", "size", "href", "path"}]``, ``href`` on the SCM host),
  one ``<date>_<machine>_docker.log`` (what the platform writes about the container: pulling
  the image, starting it, the site start failing) and one
  ``<date>_<machine>_default_docker.log`` (the container's own stdout and stderr);
- ``GET /api/vfs/LogFiles/<file>``: a file's text;
- ``GET /api/logstream``: a chunked stream that opens with Kudu's welcome line, then carries
  every line written to the app's log files from then on, and Kudu's heartbeat line ("No new
  trace in the past 1 min(s).") after every ``heartbeat_s`` of silence.

**Who may read.** Kudu takes a Microsoft Entra token for Resource Manager's audience (an
identity with a role that grants ``Microsoft.Web/sites/publish/Action``, such as Website
Contributor), or the app's basic publishing credentials, which this double does not issue. A
missing or wrong token is 401, a token for another audience is 401, and an identity the test
revoked that action from (``AzureDouble.revoke(action="sites/publish")``) is 403.

**What writes the logs.** No Functions host runs here (its base image cannot be pulled), so
nothing writes the container's stdout on its own. The platform's lines are written by the
Microsoft.Web double as its state machine moves (a start, the app running, a start that never
answers), in the words App Service uses; the container's own output stands in through
``AzureDouble.web.write_log(app, line)``, as a test's ``print`` in ``init()`` would.

Faults on demand: ``throttle(times, retry_after)`` (429 with ``Retry-After``) and
``fail(status, times)``.

Where this differs from Kudu: one machine (instance) per app, log files never rotate or
reach their size quota, no ``/api/logstream/<path>`` filters, the heartbeat interval is
configurable (Kudu's is a minute), and the address is ``127.0.0.1:PORT`` rather than a DNS
name.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from tests.doubles.azure.tls import HttpsServer, JsonHandler, TestCertificates

if TYPE_CHECKING:
    from tests.doubles.azure.arm import ArmGate

PUBLISH = "Microsoft.Web/sites/publish/Action"
WELCOME = "Welcome, you are now connected to log-streaming service."
HEARTBEAT = "No new trace in the past 1 min(s)."


def stamp(moment: float | None = None) -> str:
    """A docker log line's timestamp: ISO 8601, nine fractional digits, Z."""
    at = datetime.fromtimestamp(time.time() if moment is None else moment, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond:06d}000Z"


@dataclass
class ScmSite:
    """One app's SCM site: its log files, and the log streams open on it."""

    app: str
    resource_id: str
    machine: str
    server: HttpsServer | None = None
    files: dict[str, list[str]] = field(default_factory=dict)  # file name -> lines
    updated: dict[str, float] = field(default_factory=dict)
    streams: list[queue.Queue[str | None]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def host(self) -> str:
        assert self.server is not None
        return f"127.0.0.1:{self.server.server_address[1]}"

    def file_name(self, platform: bool) -> str:
        day = datetime.now(UTC).strftime("%Y_%m_%d")
        return f"{day}_{self.machine}_{'docker' if platform else 'default_docker'}.log"

    def write(self, line: str, level: str | None) -> None:
        """A line of the container's output, or (``level`` given) of the platform's."""
        platform = level is not None
        text = f"{stamp()} {level:<5} - {line}" if platform else f"{stamp()} {line}"
        name = self.file_name(platform)
        with self.lock:
            self.files.setdefault(name, []).append(text)
            self.updated[name] = time.time()
            for stream in self.streams:
                stream.put(text)


class ScmSites:
    """The SCM sites of the double's apps (``WebApps.scm``)."""

    def __init__(self, certificates: TestCertificates, gate: ArmGate) -> None:
        self.certificates = certificates
        self.gate = gate
        self.heartbeat_s = 60.0
        self.requests: list[tuple[str, str, int]] = []  # (method, path, status)
        self.faults: list[tuple[int, dict[str, str]]] = []  # the next answers, in order
        self._sites: dict[str, ScmSite] = {}  # app name (lower) -> its SCM site
        self._lock = threading.Lock()
        self._machines = 0

    def open(self, app: str, resource_id: str) -> str:
        """Starts the app's SCM site (once) and returns its host (``127.0.0.1:PORT``)."""
        with self._lock:
            site = self._sites.get(app.lower())
            if site is None:
                self._machines += 1
                site = ScmSite(app, resource_id, f"lw1sdlwk{self._machines:06X}")
                site.server = HttpsServer(KuduHandler, self.certificates, (self, site)).start()
                self._sites[app.lower()] = site
            return site.host

    def close(self, app: str) -> None:
        """The app is deleted: its SCM site goes, and open log streams end."""
        with self._lock:
            site = self._sites.pop(app.lower(), None)
        if site is None:
            return
        with site.lock:
            for stream in site.streams:
                stream.put(None)
        assert site.server is not None
        site.server.stop()

    def close_all(self) -> None:
        for app in list(self._sites):
            self.close(app)

    def write(self, app: str, line: str, level: str | None = None) -> None:
        """A line of the app's container output, or, with ``level`` (INFO, ERROR), one the
        platform writes about the container."""
        with self._lock:
            site = self._sites.get(app.lower())
        if site is not None:
            site.write(line, level)

    def throttle(self, times: int = 1, retry_after: int = 1) -> None:
        """The next ``times`` requests are 429 with ``Retry-After`` (App Service's front
        ends throttle a client that calls too often)."""
        self.faults += [(429, {"Retry-After": str(retry_after)})] * times

    def fail(self, status: int = 503, times: int = 1) -> None:
        """The next ``times`` requests answer ``status`` (a 5xx: the SCM site restarting)."""
        self.faults += [(status, {})] * times

    def take_fault(self) -> tuple[int, dict[str, str]] | None:
        with self._lock:
            return self.faults.pop(0) if self.faults else None

    def streams_open(self, app: str) -> int:
        with self._lock:
            site = self._sites.get(app.lower())
        return len(site.streams) if site is not None else 0

    def authorize(self, site: ScmSite, authorization: str) -> tuple[int, str]:
        """(0, "") when the caller may read the site's logs, else (status, why)."""
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return 401, "Unauthorized"
        token = self.gate.entra.token(value.strip())
        if token is None or token.expires_on < time.time():
            return 401, "Unauthorized"
        if token.audience.rstrip("/") != self.gate.url.rstrip("/"):
            return 401, "Unauthorized"
        if self.gate.denies(PUBLISH, site.resource_id):
            return 403, "403 - Forbidden: Access is denied."
        return 0, ""


class KuduHandler(JsonHandler):
    """Serves one app's SCM site (``server.app`` is ``(ScmSites, ScmSite)``)."""

    def do_GET(self) -> None:
        sites, site = self.server.app  # type: ignore[attr-defined]
        path = unquote(urlsplit(self.path).path).rstrip("/")
        status, why = sites.authorize(site, self.headers.get("Authorization", ""))
        if status:
            sites.requests.append(("GET", path, status))
            headers = {"WWW-Authenticate": 'Basic realm="site"'} if status == 401 else {}
            self.answer_text(status, why, headers)
            return
        fault = sites.take_fault()
        if fault is not None:
            sites.requests.append(("GET", path, fault[0]))
            self.answer_text(fault[0], "The service is unavailable.", fault[1])
            return
        sites.requests.append(("GET", path, 200))
        if path == "/api/logs/docker":
            self.answer(200, self._listing(site))
        elif found := re.fullmatch(r"/api/vfs/LogFiles/([^/]+)", path):
            with site.lock:
                lines = list(site.files.get(found[1], []))
            if not lines and found[1] not in site.files:
                self.answer_text(404, f"'/home/LogFiles/{found[1]}' not found.")
            else:
                self.answer_text(200, "".join(f"{line}\n" for line in lines))
        elif path == "/api/logstream":
            self._stream(sites, site)
        else:
            self.answer_text(404, "Not Found")

    def _listing(self, site: ScmSite) -> list[dict[str, Any]]:
        host = site.host
        with site.lock:
            names = sorted(site.files)
            return [
                {
                    "machineName": site.machine,
                    "lastUpdated": datetime.fromtimestamp(site.updated[name], UTC).isoformat(),
                    "size": sum(len(line) + 1 for line in site.files[name]),
                    "href": f"https://{host}/api/vfs/LogFiles/{name}",
                    "path": f"/home/LogFiles/{name}",
                }
                for name in names
            ]

    def _stream(self, sites: ScmSites, site: ScmSite) -> None:
        lines: queue.Queue[str | None] = queue.Queue()
        with site.lock:
            site.streams.append(lines)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            self._chunk(f"{stamp()}  {WELCOME}\n")
            while True:
                try:
                    line = lines.get(timeout=sites.heartbeat_s)
                except queue.Empty:
                    line = f"{stamp()}  {HEARTBEAT}"
                if line is None:  # the app is gone
                    self.wfile.write(b"0\r\n\r\n")
                    break
                self._chunk(line + "\n")
        except OSError:
            pass  # the client went away
        finally:
            with site.lock:
                site.streams.remove(lines)
            self.close_connection = True

    def _chunk(self, text: str) -> None:
        data = text.encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()
