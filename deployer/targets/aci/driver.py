"""``aci``'s driver: the container group of ``render.py``, through Azure Resource Manager.

ACI restarts a container group to change its image, so a new version is proven before it
touches the service (``candidate`` replacement):

1. ``apply`` creates a *candidate* group, ``<group>-candidate``, from the rendered
   definition (with its own DNS label when the service has one). ``wait`` waits for it to
   be provisioned, its container to run and ``GET /ready`` to answer; the first tests run
   against it.
2. ``promote`` updates the *service* group, ``<group>``, to the new definition, and waits for
   it in turn. This is the one step with downtime: ACI restarts the group's container, and
   requests fail until the new one answers (the candidate is not a load balancer).
3. ``confirm`` records the new version on the service group (tags ``confirmed-revision``
   and ``confirmed-image``) and deletes the candidate. A rollback before it puts the
   previous definition back on the service group (a second restart).

The service group's tags say what a deploy killed half-way left: a revision that differs
from ``confirmed-revision`` was promoted and never confirmed. ``tidy`` restores the confirmed
image then (or removes the group if none was ever confirmed), and removes a candidate left
behind. Secrets (registry passwords, the scoring keys) are ``${NAME}`` placeholders in the
rendered definition, filled here from the environment; ACI never returns them, so a group
read back has them filled again from the environment before it is put back.
"""

from __future__ import annotations

import copy
import json
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from azure.core.exceptions import AzureError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerinstance import ContainerInstanceManagementClient

from deployer.azure import arm_errors
from deployer.azure.bodies import raw_json
from deployer.azure.cloud import credential, management_client_options, resolve_cloud
from deployer.errors import DeployFailed, UserError
from deployer.events import Event, Level
from deployer.label_values import object_name
from deployer.placeholders import PLACEHOLDER
from deployer.scoring_keys import ScoringKeys, scoring_keys
from deployer.targets.aci.schema import Config
from deployer.targets.contract import (
    Deadline,
    Endpoint,
    Health,
    Release,
    Replacement,
    Session,
    TargetRef,
    Version,
    follow_by_polling,
    nothing_to_retire,
    probe_ready,
)

PROVIDER = "Microsoft.ContainerInstance"
TAG_REVISION = "ai.deployer.revision"
TAG_ROLE = "ai.deployer.role"
TAG_CONFIRMED_REVISION = "ai.deployer.confirmed-revision"
TAG_CONFIRMED_IMAGE = "ai.deployer.confirmed-image"
# Which environment variable fills each secret of the group: "VAR=ENV,...", the registry's
# password as "@registry=ENV". A group read back from Azure has no secrets (ACI never returns
# them); this says where to find them again to put that group back.
TAG_SECRET_SOURCES = "ai.deployer.secret-sources"
REGISTRY_SECRET = "@registry"
CANDIDATE_SUFFIX = "-candidate"
MAX_NAME = 63  # ACI: container group names and DNS labels
POLL_S = 2.0
PROBE_TIMEOUT_S = 3.0
PROGRESS_EVERY_S = 10.0
# instanceView events that mean the image will never start: fail at once, not at the deadline.
_PULL_FAILED = re.compile(
    r"fail(ed)? to pull|pull access denied|unauthorized|manifest unknown", re.I
)


def connect(target: TargetRef, session: Session) -> AciDriver:
    if not isinstance(target.settings, Config):
        raise TypeError(f"target {target.name!r} is not an aci target")
    cloud = resolve_cloud(target.azure_cloud, Path.cwd(), session.env)
    client = ContainerInstanceManagementClient(
        credential(cloud),
        target.settings.subscription_id,
        **management_client_options(cloud),
        **arm_errors.RETRY_OPTIONS,
    )
    driver = AciDriver(target, target.settings, session, client)
    driver._key_headers()  # a missing scoring key is named, with how to make one, before a build
    return driver


def group_names(service: str, target: str) -> tuple[str, str]:
    """The service group's and the candidate group's names, within ACI's 63 characters (a
    long name is cut and keeps a hash of the whole, so two targets never share one)."""
    base = object_name(service, target, room=len(CANDIDATE_SUFFIX))
    return base, base + CANDIDATE_SUFFIX


@dataclass
class AciDriver:
    target: TargetRef
    settings: Config
    session: Session
    client: ContainerInstanceManagementClient

    replacement: Replacement = "candidate"
    platform_errors: tuple[type[BaseException], ...] = (AzureError,)
    retire = nothing_to_retire  # the service group's previous definition is replaced in place

    def __post_init__(self) -> None:
        self.group, self.candidate_group = group_names(self.target.service, self.target.name)
        self.rg = self.settings.resource_group
        self._previous_body: dict[str, Any] | None = None  # the service group before promote
        self._release_body: dict[str, Any] | None = None  # the release's group, unfilled
        self._keys: ScoringKeys | None = None

    # What is there ---------------------------------------------------------------------------
    def _get(self, name: str) -> Any | None:
        try:
            return self.client.container_groups.get(self.rg, name)
        except ResourceNotFoundError:
            return None
        except HttpResponseError as error:
            raise self._failed(error, f"container group {name}") from error

    def live(self) -> Version | None:
        group = self._get(self.group)
        if group is None:
            return None
        self._previous_body = _read_back(group)
        return self._version(group)

    def _version(self, group: Any) -> Version:
        endpoint = self._endpoint(group)
        health, detail = _health(group, endpoint)
        return Version(
            revision=(group.tags or {}).get(TAG_REVISION, "unknown"),
            image=_container(group).image,
            endpoint=endpoint,
            health=health,
            detail=detail,
            ref=group.name,
        )

    def _endpoint(self, group: Any) -> Endpoint | None:
        address = group.ip_address
        if address is None or not (address.fqdn or address.ip) or not address.ports:
            return None
        base = f"http://{address.fqdn or address.ip}:{address.ports[0].port}"
        headers = self._key_headers()
        return Endpoint(f"{base}/score", f"{base}/swagger.json", headers)

    def _key_headers(self) -> dict[str, str]:
        """``Authorization`` for the tests (auth: key); the keys come from the environment
        variables deploy.yaml names, and are the run's secrets from here on."""
        if self.settings.auth != "key":
            return {}
        if self._keys is None:
            self._keys = scoring_keys(self.settings, self.session.env, self.session.secrets)
        return dict(self._keys.headers)

    # An interrupted deploy -------------------------------------------------------------------
    def tidy(self) -> list[str]:
        done: list[str] = []
        if self._delete(self.candidate_group):
            done.append(f"removed the candidate group {self.candidate_group}")
        group = self._get(self.group)
        tags = dict(group.tags or {}) if group is not None else {}
        if group is None or tags.get(TAG_REVISION) == tags.get(TAG_CONFIRMED_REVISION):
            return done
        revision = tags.get(TAG_REVISION)
        confirmed = tags.get(TAG_CONFIRMED_REVISION)
        image = tags.get(TAG_CONFIRMED_IMAGE)
        if not confirmed or not image:
            self._delete(self.group)
            done.append(f"removed {self.group}: its revision {revision} was never confirmed")
            return done
        body = _read_back(group)
        _container_body(body)["properties"]["image"] = image
        body["tags"][TAG_REVISION] = confirmed
        self._put(self.group, body)
        done.append(
            f"put the confirmed revision {confirmed} ({image}) back on {self.group}: revision "
            f"{revision} was promoted and never confirmed"
        )
        return done

    # A new version ---------------------------------------------------------------------------
    def apply(self, release: Release) -> Version:
        body = self._definition(release, candidate=True)
        self._progress(f"creating the candidate group {self.candidate_group}")
        group = self._put(self.candidate_group, body, wait=False)
        return Version(release.revision, str(release.image), None, "starting", ref=group)

    def wait(self, version: Version, deadline: Deadline) -> Version:
        return self._wait_serving(version.ref, version.revision, deadline)

    def promote(self, candidate: Version, previous: Version | None) -> Version:
        if self._release_body is None:
            raise RuntimeError("promote() before apply()")
        body = copy.deepcopy(self._release_body)
        body["tags"][TAG_ROLE] = "service"
        label = self.settings.dns_name_label
        if label:
            body["properties"]["ipAddress"]["dnsNameLabel"] = label
        # What a rollback (or the next deploy's tidy) returns to, until confirm() moves it.
        before = (self._previous_body or {}).get("tags") or {}
        for tag in (TAG_CONFIRMED_REVISION, TAG_CONFIRMED_IMAGE):
            if before.get(tag):
                body["tags"][tag] = before[tag]
        if previous is not None:
            self._progress(
                f"updating {self.group} to revision {candidate.revision}: ACI restarts the "
                "group, so requests fail until the new container answers"
            )
        else:
            self._progress(f"creating the service group {self.group}")
        self._put(self.group, body)
        deadline = Deadline(self.settings.ready_timeout_s)
        return self._wait_serving(self.group, candidate.revision, deadline)

    def confirm(self, version: Version) -> None:
        group = self._get(self.group)
        if group is None:
            raise DeployFailed(f"the service group {self.group} is gone")
        tags = {
            **(group.tags or {}),
            TAG_CONFIRMED_REVISION: version.revision,
            TAG_CONFIRMED_IMAGE: version.image,
        }
        try:
            patch = raw_json({"tags": tags})
            self.client.container_groups.update(
                self.rg, self.group, patch, content_type="application/json"
            )
        except HttpResponseError as error:
            raise self._failed(error, f"container group {self.group}") from error
        try:
            self._delete(self.candidate_group)
        except (AzureError, DeployFailed) as error:
            self._progress(
                f"could not remove the candidate group ({error}); the next deploy does", "warning"
            )

    def roll_back(self, release: Release, previous: Version | None) -> None:
        self._delete(self.candidate_group)
        group = self._get(self.group)
        if group is None or (group.tags or {}).get(TAG_REVISION) != release.revision:
            return  # the service group was not touched
        if previous is None or self._previous_body is None:
            self._delete(self.group)
            return
        self._progress(f"putting revision {previous.revision} back on {self.group}")
        self._put(self.group, copy.deepcopy(self._previous_body))
        self._wait_serving(self.group, previous.revision, Deadline(self.settings.ready_timeout_s))

    # Logs and removal ------------------------------------------------------------------------
    def logs(self, revision: str, tail: int) -> list[str]:
        for name in (self.candidate_group, self.group):
            group = self._get(name)
            if group is not None and (group.tags or {}).get(TAG_REVISION) == revision:
                container = _container(group).name
                try:
                    found = self.client.containers.list_logs(self.rg, name, container, tail=tail)
                except HttpResponseError:
                    return []
                return [line.rstrip() for line in (found.content or "").splitlines()]
        return []

    def follow(self, revision: str, tail: int) -> Iterator[str]:
        return follow_by_polling(lambda last: self.logs(revision, last), POLL_S)

    def remove(self, images: bool) -> list[str]:
        removed = []
        for name in (self.candidate_group, self.group):
            if self._delete(name):
                removed.append(f"container group {name}")
        return removed

    def close(self) -> None:
        self.client.close()

    # Helpers ---------------------------------------------------------------------------------
    def _definition(self, release: Release, candidate: bool) -> dict[str, Any]:
        """The rendered group with this deploy's tags (its secrets still placeholders)."""
        body: dict[str, Any] = json.loads(release.artifacts["container-group.json"])
        body["tags"] = {
            **body.get("tags", {}),
            TAG_REVISION: release.revision,
            TAG_ROLE: "candidate" if candidate else "service",
        }
        sources = _secret_sources(body)
        if sources:
            body["tags"][TAG_SECRET_SOURCES] = sources
        self._release_body = copy.deepcopy(body)
        label = self.settings.dns_name_label
        if candidate and label:
            body["properties"]["ipAddress"]["dnsNameLabel"] = _candidate_label(label)
        return body

    def _put(self, name: str, body: dict[str, Any], wait: bool = True) -> str:
        """Create or update group ``name``; with ``wait``, until ARM's operation is done."""
        filled = self._fill_secrets(body)
        data = raw_json(filled)
        try:
            poller = self.client.container_groups.begin_create_or_update(
                self.rg, name, data, content_type="application/json"
            )
            if wait:
                poller.result()
        except HttpResponseError as error:
            raise self._failed(error, f"container group {name}") from error
        return name

    def _delete(self, name: str) -> bool:
        """Delete group ``name`` and wait; False if there was none (ARM answers a DELETE of
        nothing with 204, so ask first)."""
        if self._get(name) is None:
            return False
        try:
            self.client.container_groups.begin_delete(self.rg, name).result()
        except ResourceNotFoundError:
            return False
        except HttpResponseError as error:
            if error.status_code == 404:
                return False
            raise self._failed(error, f"container group {name}") from error
        return True

    def _fill_secrets(self, body: dict[str, Any]) -> dict[str, Any]:
        """``${NAME}`` placeholders filled from the environment, and the secrets a group read
        back from Azure lacks filled from where its secret-sources tag says."""
        env = self.session.env
        wanted = {m[1] for m in PLACEHOLDER.finditer(json.dumps(body))}
        sources = _parse_sources((body.get("tags") or {}).get(TAG_SECRET_SOURCES, ""))
        missing = sorted(name for name in wanted | set(sources.values()) if not env.get(name))
        if missing:
            raise UserError(
                f"target {self.target.name}: {', '.join(missing)} must be set in the environment "
                "(deploy.yaml names them for the container group's secrets)"
            )

        def value(match: re.Match[str]) -> str:
            return json.dumps(env[match[1]])[1:-1]

        filled: dict[str, Any] = json.loads(PLACEHOLDER.sub(value, json.dumps(body)))
        for variable in _container_body(filled)["properties"].get("environmentVariables", []):
            name = variable.get("name")
            if (
                variable.get("value") is None
                and not variable.get("secureValue")
                and name in sources
            ):
                variable["secureValue"] = env[sources[name]]
        for login in filled["properties"].get("imageRegistryCredentials") or []:
            if login.get("username") and not login.get("password") and REGISTRY_SECRET in sources:
                login["password"] = env[sources[REGISTRY_SECRET]]
        # Secrets are what fills a secure value or a password; a user name is not one
        # (masking it would blank every word it shares with the output).
        for name in {*_parse_sources(_secret_sources(body)).values(), *sources.values()}:
            self.session.secrets.add(env[name])
        return filled

    def _wait_serving(self, name: str, revision: str, deadline: Deadline) -> Version:
        """Until group ``name`` is provisioned, its container runs and GET /ready answers
        200; fails at once when it cannot get there (a failed provisioning, a crash, an
        image that cannot be pulled)."""
        started = last_report = time.monotonic()
        while True:
            group = self._get(name)
            if group is None:
                raise DeployFailed(f"the container group {name} disappeared while starting")
            state = group.provisioning_state or "Unknown"
            view = _container(group).instance_view
            current = getattr(view, "current_state", None)
            events = [e.message or "" for e in (getattr(view, "events", None) or [])]
            pull_error = next((e for e in events if _PULL_FAILED.search(e)), None)
            if pull_error is not None:
                raise DeployFailed(f"{name} cannot pull its image: {pull_error}")
            if state == "Failed":
                reason = "; ".join(events[-3:]) or "no reason given"
                raise DeployFailed(f"provisioning {name} failed: {reason}", self.logs(revision, 40))
            restarts = getattr(view, "restart_count", 0) or 0
            if restarts > 0 or getattr(current, "state", "") == "Terminated":
                # Between restarts the current state is Waiting: the exit is the previous one.
                code = getattr(current, "exit_code", None)
                if code is None:
                    code = getattr(getattr(view, "previous_state", None), "exit_code", None)
                raise DeployFailed(
                    f"the container of {name} exited (code {code}, restarted {restarts} times) "
                    "before it was ready",
                    self.logs(revision, 40),
                )
            endpoint = self._endpoint(group)
            if state == "Succeeded" and endpoint is not None:
                health, _ = _probe(endpoint)
                if health == "healthy":
                    return Version(revision, _container(group).image, endpoint, "healthy", ref=name)
            if deadline.expired:
                raise deadline.exceeded(
                    f"{name} did not become ready (provisioning {state}, container "
                    f"{getattr(current, 'state', 'not started')})",
                    self.logs(revision, 40),
                )
            now = time.monotonic()
            if now - last_report >= PROGRESS_EVERY_S:
                last_report = now
                self._progress(
                    f"{name}: provisioning {state}, container "
                    f"{getattr(current, 'state', 'not started')} ({now - started:.0f} s)",
                    "progress",
                )
            deadline.sleep(POLL_S)

    def _failed(self, error: HttpResponseError, what: str) -> DeployFailed:
        return DeployFailed(arm_errors.explain(error, PROVIDER, what))

    def _progress(self, message: str, level: Level = "step") -> None:
        key = self.target.name if level == "progress" else ""
        self.session.progress(Event(level, f"{self.target.name}: {message}", key=key))


def _secret_sources(body: Mapping[str, Any]) -> str:
    """The secret-sources tag of a rendered group: each secure variable's and the registry
    password's ``${NAME}``, as ``VAR=NAME,@registry=NAME``."""
    pairs = []
    for variable in _container_body(body)["properties"].get("environmentVariables", []):
        found = PLACEHOLDER.fullmatch(str(variable.get("secureValue", "")))
        if found:
            pairs.append(f"{variable['name']}={found[1]}")
    for login in body["properties"].get("imageRegistryCredentials") or []:
        found = PLACEHOLDER.fullmatch(str(login.get("password", "")))
        if found:
            pairs.append(f"{REGISTRY_SECRET}={found[1]}")
    return ",".join(pairs)


def _parse_sources(tag: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in tag.split(",") if "=" in pair)


def _read_back(group: Any) -> dict[str, Any]:
    """A group as Azure returns it, as a body to put back: no read-only fields, and no
    address (Azure assigns it; the DNS label stays)."""
    body: dict[str, Any] = group.serialize()
    body.setdefault("tags", {})
    address = body.get("properties", {}).get("ipAddress") or {}
    address.pop("ip", None)
    return body


def _candidate_label(label: str) -> str:
    return label[: MAX_NAME - len(CANDIDATE_SUFFIX)].rstrip("-") + CANDIDATE_SUFFIX


def _container(group: Any) -> Any:
    return group.containers[0]


def _container_body(body: Mapping[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = body["properties"]["containers"][0]
    return container


def _health(group: Any, endpoint: Endpoint | None) -> tuple[Health, str]:
    state = group.provisioning_state
    current = getattr(_container(group).instance_view, "current_state", None)
    if state != "Succeeded":
        return ("unhealthy" if state == "Failed" else "starting"), f"provisioning {state}"
    if getattr(current, "state", None) != "Running":
        return "stopped", f"container {getattr(current, 'state', 'not started')}"
    if endpoint is None:
        return "unhealthy", "the group has no address"
    return _probe(endpoint)


def _probe(endpoint: Endpoint) -> tuple[Health, str]:
    return probe_ready(endpoint.scoring_uri.removesuffix("/score") + "/ready", PROBE_TIMEOUT_S)
