"""``local``'s driver: the scoring image on the local Docker engine, host network, switched
between versions with no failed request.

The service port P belongs to one listening socket that is never closed while the service
lives; versions hand it to each other (``deployer.serving.control``, reached with ``docker
exec`` inside each container, so only the container's own user can drive its server):

1. ``apply`` starts the new version as a *candidate* container, ``<base>-<rev>-candidate``,
   listening on a free private port Q only. ``wait`` and the first tests use Q.
2. ``promote``: the candidate *joins* P, taking a copy of the live version's socket (both
   accept from its one queue; nothing is reset), then the live version *pauses*: it stops
   accepting, and its keep-alive clients are told ``Connection: close`` on their next
   answer. Only the new version takes new connections; the tests run again on P.
3. ``confirm``: the candidate is renamed ``<base>-<rev>``, gets the restart policy of a
   service, and is told it was promoted (after a crash it serves P again by itself).
4. ``retire``: the previous version gets SIGTERM, finishes what it has, and is removed.

A rollback before ``confirm`` resumes the previous version first, then stops the
candidate: P always has a version accepting. A deploy killed anywhere leaves containers
that ``tidy`` sorts out: the newest service-named container is live; candidates and older
ones are stopped gracefully, after the live one is made to accept again.

A live version started by a deployer older than this protocol cannot share its socket: it
is stopped before the new one binds P (one start-up without a listener), once.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions

from deployer import docker_engine
from deployer.errors import DeployFailed
from deployer.events import Event, Level, Sink
from deployer.targets.contract import (
    Deadline,
    Endpoint,
    Health,
    Release,
    Replacement,
    Session,
    TargetRef,
    Version,
    probe_ready,
)
from deployer.targets.local.render import LABEL_BASE_NAME, base_name, stop_timeout_s
from deployer.targets.local.schema import Config

if TYPE_CHECKING:
    from docker.models.containers import Container

LABEL_REVISION = "ai.deployer.revision"
LABEL_INSTANCE = "ai.deployer.instance"
LABEL_PORT = "ai.deployer.port"
CANDIDATE_SUFFIX = "-candidate"
SERVICE_RESTART = {"Name": "unless-stopped", "MaximumRetryCount": 0}
# A candidate that dies must stay dead, so that its exit and its log can be reported.
CANDIDATE_RESTART = {"Name": "no", "MaximumRetryCount": 0}
CONTROL = ["python", "-m", "deployer.serving.control"]
POLL_S = 0.2
PROBE_TIMEOUT_S = 2.0
PROGRESS_EVERY_S = 5.0
# The scoring server's access-log records: one per request, not news while waiting.
_ACCESS_LOG = '"event":"access"'


class NoControl(Exception):
    """The container's server predates the control protocol (an older deployer's image)."""


class ControlFailed(Exception):
    """A control operation was refused; the message is the server's reason."""


def connect(target: TargetRef, session: Session) -> LocalDriver:
    if not isinstance(target.settings, Config):
        raise TypeError(f"target {target.name!r} is not a local target")
    return LocalDriver(target, target.settings, session, docker_engine.connect())


@dataclass
class LocalDriver:
    target: TargetRef
    settings: Config
    session: Session
    client: docker.DockerClient

    replacement: Replacement = "candidate"
    platform_errors: tuple[type[BaseException], ...] = (
        docker.errors.DockerException,
        requests.exceptions.RequestException,
        NoControl,
        ControlFailed,
    )

    def __post_init__(self) -> None:
        self.base = base_name(self.target.service, self.target.name)
        self.port = self.settings.port
        self._candidate: Container | None = None
        self._candidate_port = 0
        self._follower: _LogFollower | None = None

    # What is there ---------------------------------------------------------------------
    def _containers(self) -> list[Container]:
        """Every container of this target, newest first (as the list gives them: a summary,
        without the restart policy or the environment)."""
        found = self.client.containers.list(
            all=True, filters={"label": f"{LABEL_BASE_NAME}={self.base}"}
        )
        return sorted(found, key=lambda c: str(c.attrs.get("Created", "")), reverse=True)

    def _services(self) -> list[Container]:
        return [c for c in self._containers() if not c.name.endswith(CANDIDATE_SUFFIX)]

    def _version(self, container: Container, port: int) -> Version:
        running = container.status == "running"
        health, detail = _probe(port) if running else ("stopped", str(container.status))
        return Version(
            revision=container.labels.get(LABEL_REVISION, "unknown"),
            image=_image_of(container),
            endpoint=_endpoint(port),
            health=health,
            detail=detail,
            ref=container.name,
        )

    def live(self) -> Version | None:
        services = self._services()
        running = [c for c in services if c.status == "running"]
        chosen = (running or services or [None])[0]
        return None if chosen is None else self._version(chosen, service_port(chosen))

    # Finishing what an interrupted deploy left ------------------------------------------------
    def tidy(self) -> list[str]:
        done: list[str] = []
        containers = self._containers()
        services = [c for c in containers if not c.name.endswith(CANDIDATE_SUFFIX)]
        running = [c for c in services if c.status == "running"]
        live = running[0] if running else None
        candidates = [c for c in containers if c.name.endswith(CANDIDATE_SUFFIX)]
        if live is not None:
            others = [c for c in containers if c is not live and c.status == "running"]
            done += self._make_serving(live, holders=others)
        for leftover in [*candidates, *(c for c in services if c is not live)]:
            self._stop(leftover)
            kind = "candidate" if leftover in candidates else "previous version"
            done.append(f"stopped and removed the {kind} {leftover.name}")
        return done

    def _make_serving(self, live: Container, holders: list[Container]) -> list[str]:
        """The live container accepts on P, survives restarts, and is marked promoted."""
        done = []
        try:
            state = self._control(live, "status")
        except NoControl:
            return []  # an older deployer's container: it binds P by itself
        port = service_port(live)
        listening = {item["port"]: item["accepting"] for item in state.get("listeners", [])}
        if listening.get(port) is False:
            self._control(live, "resume")
            done.append(f"{live.name} was paused: it accepts connections again")
        elif port not in listening:
            source = next(
                (h for h in holders if h.status == "running" and service_port(h) == port), None
            )
            self._join(live, source)
            done.append(f"{live.name} took port {port} back")
        if not state.get("promoted"):
            self._control(live, "promote")
            done.append(f"{live.name} was not yet marked as the live version: it is now")
        live.reload()  # the listed summary has no restart policy
        policy = live.attrs.get("HostConfig", {}).get("RestartPolicy", {})
        if policy.get("Name") != SERVICE_RESTART["Name"]:
            live.update(restart_policy=SERVICE_RESTART)
        return done

    # A new version ---------------------------------------------------------------------------
    def apply(self, release: Release) -> Version:
        spec: dict[str, Any] = json.loads(release.artifacts["container.json"])
        private_port = free_port()
        instance = f"{self.base}-{release.revision}-{secrets.token_hex(3)}"
        spec["Labels"] = {
            **spec["Labels"],
            LABEL_REVISION: release.revision,
            LABEL_INSTANCE: instance,
            LABEL_PORT: str(self.port),
        }
        spec["Env"] = [
            *spec["Env"],
            f"DEPLOYER_CANDIDATE_PORT={private_port}",
            f"DEPLOYER_INSTANCE={instance}",
        ]
        spec["HostConfig"]["RestartPolicy"] = CANDIDATE_RESTART
        name = f"{self.base}-{release.revision}{CANDIDATE_SUFFIX}"
        with contextlib.suppress(docker.errors.NotFound):
            self.client.containers.get(name).remove(force=True)
        self._progress(f"starting revision {release.revision} on private port {private_port}")
        created = self.client.api.create_container_from_config(spec, name=name)
        container = self.client.containers.get(created["Id"])
        self._candidate, self._candidate_port = container, private_port
        container.start()
        self._follower = _LogFollower(container, self.session.progress)
        return Version(
            release.revision,
            str(release.image),
            _endpoint(private_port),
            "starting",
            ref=container.name,
        )

    def wait(self, version: Version, deadline: Deadline) -> Version:
        container = self._require_candidate()
        ready_url = f"http://127.0.0.1:{self._candidate_port}/ready"
        try:
            return self._wait_ready(container, version, ready_url, deadline)
        finally:
            if self._follower is not None:
                self._follower.stop()

    def _wait_ready(
        self,
        container: Container,
        version: Version,
        ready_url: str,
        deadline: Deadline,
    ) -> Version:
        started = last_report = time.monotonic()
        while True:
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs.get("State", {}).get("ExitCode")
                raise DeployFailed(
                    f"the new version's container exited with code {code} before it was ready",
                    self.logs(version.revision, 40),
                )
            if _get(ready_url) == 200:
                return Version(
                    version.revision, version.image, version.endpoint, "healthy", ref=version.ref
                )
            if deadline.expired:
                raise deadline.exceeded(
                    f"the new version did not answer {ready_url}", self.logs(version.revision, 40)
                )
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self._progress(f"waiting for init() to finish ({now - started:.0f} s)", "progress")
            deadline.sleep(POLL_S)

    def promote(self, candidate: Version, previous: Version | None) -> Version:
        new = self._require_candidate()
        old = self._container(previous)
        if old is None or old.status != "running":
            self._join(new, None)
        elif service_port(old) != self.port:
            # deploy.yaml moved the service to another port: the new version binds it, and
            # the previous one serves its old port until it is retired.
            self._join(new, None)
        else:
            try:
                self._control(old, "status")
            except NoControl:
                self._progress(
                    f"{old.name} predates zero-downtime switching: stopping it before the new "
                    "version takes the port (this once, requests may fail for a moment)",
                    "warning",
                )
                self._stop_without_removing(old)
                self._join(new, None)
            else:
                self._join(new, old)
                self._control(old, "pause")
        self._progress(f"revision {candidate.revision} serves port {self.port}")
        return Version(
            candidate.revision, candidate.image, _endpoint(self.port), "healthy", ref=new.name
        )

    def confirm(self, version: Version) -> None:
        new = self._require_candidate()
        new.reload()
        if new.status != "running":
            code = new.attrs.get("State", {}).get("ExitCode")
            raise DeployFailed(
                f"the new version's container stopped (exit code {code}) after it took over",
                self.logs(version.revision, 40),
            )
        service_name = new.name.removesuffix(CANDIDATE_SUFFIX)
        with contextlib.suppress(docker.errors.NotFound):
            leftover = self.client.containers.get(service_name)  # the same revision, again
            if leftover.id != new.id:
                self._stop(leftover)
        new.rename(service_name)
        new.update(restart_policy=SERVICE_RESTART)
        self._control(new, "promote")
        new.reload()

    def retire(self, previous: Version) -> None:
        old = self._container(previous)
        if old is not None and old.id != self._require_candidate().id:
            self._stop(old)

    def roll_back(self, release: Release, previous: Version | None) -> None:
        old = self._container(previous)
        if old is not None:
            if old.status != "running":
                old.start()  # an older deployer's container, stopped by promote
            else:
                with contextlib.suppress(NoControl):
                    self._control(old, "resume")
        candidate = self._candidate or self._find_candidate(release.revision)
        if candidate is not None:
            self._stop(candidate)
        self._candidate = None

    # Logs ------------------------------------------------------------------------------------
    def _of_revision(self, revision: str) -> Container | None:
        return next(
            (c for c in self._containers() if c.labels.get(LABEL_REVISION) == revision), None
        )

    def logs(self, revision: str, tail: int) -> list[str]:
        container = self._of_revision(revision)
        if container is None:
            return []
        text = container.logs(tail=tail).decode("utf-8", "replace")
        return [line.rstrip() for line in text.splitlines()]

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        container = self._of_revision(revision)
        if container is None:
            return
        buffer = b""
        for chunk in container.logs(stream=True, follow=True, tail=tail):
            buffer += chunk
            *lines, buffer = buffer.split(b"\n")
            for raw in lines:
                yield raw.decode("utf-8", "replace").rstrip()
        if buffer:
            yield buffer.decode("utf-8", "replace").rstrip()

    # Removing --------------------------------------------------------------------------------
    def remove(self, images: bool) -> list[str]:
        removed: list[str] = []
        image_ids: set[str] = set()
        for container in self._containers():
            image_ids.add(str(container.attrs.get("Image", "")))
            self._stop(container)
            removed.append(f"container {container.name}")
        if images:
            for image in sorted(i for i in image_ids if i):
                with contextlib.suppress(docker.errors.APIError):
                    self.client.images.remove(image, force=True)
                    removed.append(f"image {image[:19]}")
        return removed

    def close(self) -> None:
        self.client.close()

    # Helpers ---------------------------------------------------------------------------------
    def _progress(self, message: str, level: Level = "step") -> None:
        key = self.target.name if level == "progress" else ""
        self.session.progress(Event(level, f"{self.target.name}: {message}", key=key))

    def _require_candidate(self) -> Container:
        if self._candidate is None:
            raise RuntimeError("no candidate: apply() was not called")
        return self._candidate

    def _find_candidate(self, revision: str) -> Container | None:
        name = f"{self.base}-{revision}{CANDIDATE_SUFFIX}"
        return next((c for c in self._containers() if c.name == name), None)

    def _container(self, version: Version | None) -> Container | None:
        if version is None:
            return None
        try:
            container = self.client.containers.get(version.ref)
        except docker.errors.NotFound:
            return None
        return container

    def _control(self, container: Container, *args: str) -> dict[str, Any]:
        """Run the server's control command inside ``container``; its JSON reply."""
        code, output = container.exec_run([*CONTROL, *args])
        text = output.decode("utf-8", "replace").strip()
        if code != 0 and ("No module named" in text or code in (126, 127)):
            raise NoControl(f"{container.name} has no control command")
        last = text.splitlines()[-1] if text else ""
        try:
            reply: dict[str, Any] = json.loads(last)
        except ValueError:
            reply = {"ok": False, "error": text or f"exit status {code}"}
        if code != 0 or not reply.get("ok"):
            raise ControlFailed(f"{container.name}: {args[0]}: {reply.get('error', text)}")
        return reply

    def _join(self, new: Container, source: Container | None) -> None:
        if source is None:
            self._control(new, "join")
            return
        instance = source.labels.get(LABEL_INSTANCE)
        if not instance:
            raise ControlFailed(f"{source.name} has no {LABEL_INSTANCE} label")
        self._control(new, "join", "--from", instance)

    def _stop(self, container: Container) -> None:
        """SIGTERM: the server finishes its requests (StopTimeout covers the longest one
        allowed), then SIGKILL; then remove."""
        self._stop_without_removing(container)
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)

    def _stop_without_removing(self, container: Container) -> None:
        timeout = stop_timeout_s(self.target.server.scoring_timeout_ms)
        with contextlib.suppress(docker.errors.NotFound):
            container.stop(timeout=timeout)


def free_port() -> int:
    """A port free on 127.0.0.1 now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def service_port(container: Container) -> int:
    """The port a container serves (or would serve, as a candidate) its clients on."""
    if container.labels.get(LABEL_PORT, "").isdigit():
        return int(container.labels[LABEL_PORT])
    # An older deployer's container: its environment says, which a listed summary lacks.
    if "Env" not in container.attrs.get("Config", {}):
        container.reload()
    for entry in container.attrs.get("Config", {}).get("Env") or []:
        name, _, value = str(entry).partition("=")
        if name == "DEPLOYER_SERVER_PORT" and value.isdigit():
            return int(value)
    return 0


def _endpoint(port: int) -> Endpoint:
    return Endpoint(f"http://127.0.0.1:{port}/score", f"http://127.0.0.1:{port}/swagger.json")


def _image_of(container: Container) -> str:
    return str(container.attrs.get("Config", {}).get("Image", ""))


def _get(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=PROBE_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (urllib.error.URLError, OSError):
        return None


def _probe(port: int) -> tuple[Health, str]:
    """Health as a client of the service port sees it: GET /ready."""
    return probe_ready(f"http://127.0.0.1:{port}/ready", PROBE_TIMEOUT_S)


class _LogFollower:
    """Shows a starting container's log as progress, from a thread, until ``stop``: what the
    user watches while init() runs (the tests' own requests are not shown)."""

    def __init__(self, container: Container, progress: Sink) -> None:
        self._progress = progress
        self._showing = True
        self._thread = threading.Thread(target=self._run, args=(container,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        time.sleep(POLL_S)  # the last lines of a container that just exited
        self._showing = False

    def _run(self, container: Container) -> None:
        buffer = b""
        with contextlib.suppress(Exception):
            for chunk in container.logs(stream=True, follow=True):
                if not self._showing:
                    return
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for raw in lines:
                    line = raw.decode("utf-8", "replace").rstrip()
                    if _ACCESS_LOG not in line.replace(" ", ""):
                        self._progress(Event("detail", f"  | {line}", key="log"))
