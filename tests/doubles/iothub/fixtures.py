"""``IoTHubDouble``: an IoT hub's service API on 127.0.0.1 over TLS, its devices and (with
``docker_env``) their simulated edge agents; the test API to set it up, look inside and
inject faults. See tests/doubles/iothub/__init__.py for an example.
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.doubles.azure.tls import HttpsServer, make_certificates
from tests.doubles.iothub.agent import EdgeAgent
from tests.doubles.iothub.auth import Policy
from tests.doubles.iothub.hub import Hub
from tests.doubles.iothub.server import Recorded, Rule, Service, ServiceHandler

CONNECTION_STRING_ENV = "IOTHUB_CONNECTION_STRING"  # deploy.yaml's default connection_string_env


def new_key() -> str:
    return base64.b64encode(secrets.token_bytes(32)).decode()


class IoTHubDouble:
    """``with IoTHubDouble(tmp_path, docker_env=dev_env) as hub:`` then
    ``subprocess.run(..., env={**os.environ, **hub.env()})``.

    - ``docker_env``: the environment a docker-py client is made from (DOCKER_HOST...): each
      edge device added gets a simulated edge agent that runs its modules with deployer's
      ``Engine``. Without it (and without ``engine_factory``) devices have no runtime: they
      stay Disconnected, their twins' reported properties empty.
    - ``engine_factory(device_id)``: an engine of another kind (a test's stand-in with
      ``Engine``'s API) for each device's agent, instead of deployer's on Docker.
    - ``agent_interval``: seconds between two reports of an agent (a real agent: about 30 s
      when nothing changes; here 0.5 s so tests run fast).
    """

    def __init__(
        self,
        workdir: Path,
        *,
        docker_env: dict[str, str] | None = None,
        hub: str = "testhub",
        policy: str = "iothubowner",
        engine_factory: Callable[[str], Any] | None = None,
        agent_interval: float = 0.5,
    ) -> None:
        self.workdir = Path(workdir)
        self.name = hub
        self.policy = policy
        self.docker_env = docker_env
        self.session = f"iothub-{uuid.uuid4().hex[:12]}"
        self.certificates = make_certificates(self.workdir / "iothub-tls")
        self.policies = {policy: Policy(policy, new_key(), new_key())}
        self._hub = Hub("")  # the host is known once the server has its port
        self.service = Service(self._hub, self.policies)
        self._server = HttpsServer(ServiceHandler, self.certificates, self.service)
        self._hub.host = self.host
        self._engine_factory = engine_factory
        self._agent_interval = agent_interval
        self._docker: Any = None
        self.agents: dict[str, EdgeAgent] = {}

    def __enter__(self) -> IoTHubDouble:
        self._server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the agents (their module containers are removed), then the server."""
        self.service.release_all()
        try:
            for agent in list(self.agents.values()):
                agent.stop(remove=True)
            self.agents.clear()
            if self._docker is not None:
                self._remove_leftovers()
        finally:
            if self._docker is not None:
                self._docker.close()
                self._docker = None
            self._server.stop()

    # Where it is ----------------------------------------------------------------------------
    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        """The hub's host name as the connection string gives it: ``localhost:PORT``."""
        return f"localhost:{self.port}"

    @property
    def ca_bundle(self) -> Path:
        """The test CA, for ``REQUESTS_CA_BUNDLE``."""
        return self.certificates.ca_bundle

    @property
    def key(self) -> str:
        return self.policies[self.policy].primary_key

    @property
    def connection_string(self) -> str:
        """The shared access policy's connection string, as the portal shows it."""
        return self.connection_string_with()

    def connection_string_with(
        self, *, key: str | None = None, policy: str | None = None, host: str | None = None
    ) -> str:
        """A connection string with another key (``wrong_key()`` gives one), policy name or
        host name."""
        return (
            f"HostName={host or self.host};SharedAccessKeyName={policy or self.policy};"
            f"SharedAccessKey={key or self.key}"
        )

    def wrong_key(self) -> str:
        """A key of the right form that is not the policy's."""
        return new_key()

    def env(self, variable: str = CONNECTION_STRING_ENV) -> dict[str, str]:
        """What a deployer subprocess needs: the CA bundle and the connection string in
        ``variable`` (deploy.yaml's ``connection_string_env``), and DOCKER_HOST if given."""
        values = {"REQUESTS_CA_BUNDLE": str(self.ca_bundle), variable: self.connection_string}
        docker_host = (self.docker_env or {}).get("DOCKER_HOST")
        if docker_host:
            values["DOCKER_HOST"] = docker_host
        return values

    # Setting up -----------------------------------------------------------------------------
    def add_device(
        self, device_id: str, edge: bool = True, *, tags: dict[str, Any] | None = None
    ) -> None:
        """Register a device (an IoT Edge device by default, with its ``$edgeAgent`` and
        ``$edgeHub`` module twins). With ``docker_env`` or ``engine_factory``, an edge
        device's agent starts at once: the device is Connected and reports (417, nothing
        deployed yet, until a manifest is applied)."""
        self._hub.add_device(device_id, edge=edge, tags=tags)
        if not edge or (self.docker_env is None and self._engine_factory is None):
            return
        from deployer.targets.iot_edge.manifest import read_manifest

        engine = self._new_engine(device_id)
        agent = EdgeAgent(
            self._hub, device_id, engine, read_manifest, interval=self._agent_interval
        )
        self.agents[device_id] = agent.start()

    def _new_engine(self, device_id: str) -> Any:
        if self._engine_factory is not None:
            return self._engine_factory(device_id)
        import docker

        from deployer.targets.iot_edge.engine import Engine

        if self._docker is None:
            self._docker = docker.from_env(
                environment={**os.environ, **(self.docker_env or {})}, timeout=300
            )
        safe = re.sub(r"[^A-Za-z0-9_.-]", "-", device_id)
        return Engine(self._docker, session=self.session, name_prefix=f"{self.session}-{safe}-")

    def _remove_leftovers(self) -> None:
        from deployer.targets.iot_edge.engine import LABEL_SESSION

        label = f"{LABEL_SESSION}={self.session}"
        for container in self._docker.containers.list(all=True, filters={"label": label}):
            container.remove(force=True)

    def set_tags(self, device_id: str, tags: dict[str, Any]) -> None:
        """Update a device twin's tags as an operator would (merged; ``None`` removes one):
        deployments are evaluated again."""
        self._hub.update_twin(device_id, None, {"tags": tags}, None, replace=False)

    def add_policy(self, name: str) -> str:
        """Another shared access policy (every policy may do everything here); its key."""
        self.policies[name] = Policy(name, new_key(), new_key())
        return self.policies[name].primary_key

    def accept_bearer(self, token: str) -> None:
        """Accept ``Authorization: Bearer <token>`` (``auth: entra``: give the test's
        credential this token)."""
        self.service.bearer_tokens.add(token)

    def advance_clock(self, seconds: float) -> None:
        """The hub's clock runs ahead: SAS tokens expire sooner (``se`` is checked against
        it)."""
        self.service.clock_offset += seconds

    # What is there --------------------------------------------------------------------------
    @property
    def requests(self) -> list[Recorded]:
        """Every request served: method, path (decoded), query, headers, body (JSON), the
        target as sent, status, operation id, error code and detail."""
        return list(self.service.requests)

    def requests_to(self, method: str, path: str = "") -> list[Recorded]:
        """The requests with this method and a decoded path matching ``path``."""
        return [r for r in self.requests if r.method == method and re.search(path, r.path)]

    @property
    def contract_errors(self) -> list[str]:
        """Answers of the double that break the contract's response schemas (its bugs)."""
        return list(self.service.errors)

    def twin(self, device_id: str, module_id: str | None = None) -> dict[str, Any]:
        """A twin as GET answers it."""
        return self._hub.twin_view(device_id, module_id)

    def reported(self, device_id: str, module_id: str = "$edgeAgent") -> dict[str, Any]:
        """A module twin's reported properties, without ``$metadata`` and ``$version``."""
        with self._hub.lock:
            return dict(self._hub.module(device_id, module_id).reported.document)

    def desired(self, device_id: str, module_id: str = "$edgeAgent") -> dict[str, Any]:
        with self._hub.lock:
            return dict(self._hub.module(device_id, module_id).desired.document)

    def configuration(self, config_id: str) -> dict[str, Any]:
        return self._hub.get_configuration(config_id)

    def configuration_ids(self) -> list[str]:
        """The ids of the hub's configurations, sorted."""
        with self._hub.lock:
            return sorted(self._hub.configurations)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float = 60, what: str = "a condition"
    ) -> None:
        """Wait until ``predicate()`` holds (checked on every change of the hub's state and
        every 0.5 s); AssertionError after ``timeout`` seconds."""
        import time

        deadline = time.monotonic() + timeout
        while not predicate():  # not under the hub's lock: it may ask the hub over HTTP
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout} s waiting for {what}")
            with self._hub.changed:
                self._hub.changed.wait(timeout=min(0.5, left))

    @property
    def agent_errors(self) -> list[str]:
        return [e for agent in self.agents.values() for e in agent.errors]

    # Faults ---------------------------------------------------------------------------------
    def fail(
        self,
        method: str,
        path: str,
        status: int = 500,
        *,
        times: int = 1,
        retry_after: int = 1,
        code: str = "",
        message: str = "",
    ) -> Rule:
        """Answer the next ``times`` requests with this method and a path matching ``path``
        (a regular expression searched in the decoded path, e.g. ``/twins/edge-01/modules/
        \\$edgeAgent``, and in the path as sent) with an error: 429 ThrottlingException with
        ``Retry-After``, 500 ServerError, 503 ServiceUnavailable (with Retry-After), or
        another status; ``code``/``message`` override IoT Hub's. Applies after
        authentication, before validation."""
        rule = Rule(method.upper(), path, "fail", status, times, retry_after, code, message)
        return self.service.add_rule(rule)

    def hold(self, method: str, path: str, times: int = 1) -> Rule:
        """Keep matching requests waiting until ``rule.released`` is set (then served)."""
        return self.service.add_rule(Rule(method.upper(), path, "hold", times=times))

    def device_offline(self, device_id: str) -> None:
        """The device loses its connection: Disconnected, its reported properties no longer
        change (it applies nothing new), direct methods answer 404 DeviceNotOnline. Its
        modules keep running."""
        self._hub.set_connection(device_id, offline=True)

    def device_online(self, device_id: str) -> None:
        """The device reconnects: it catches up with its desired properties."""
        self._hub.set_connection(device_id, offline=False)


@pytest.fixture
def iothub(tmp_path: Path) -> Iterator[IoTHubDouble]:
    """A hub without Docker (no simulated runtime), with an edge device ``edge-01``."""
    with IoTHubDouble(tmp_path) as double:
        double.add_device("edge-01")
        yield double


@pytest.fixture
def iothub_edge(tmp_path: Path, dev_env: dict[str, str]) -> Iterator[IoTHubDouble]:
    """A hub whose edge device ``edge-01`` runs its modules on Docker (the test module needs
    ``dev_env`` in scope: ``from tests.docker.conftest import dev_env``)."""
    environment = {k: v for k, v in dev_env.items() if k == "DOCKER_HOST"}
    with IoTHubDouble(tmp_path, docker_env=environment) as double:
        double.add_device("edge-01")
        yield double
        assert not double.agent_errors, "\n".join(double.agent_errors)
