"""What only the ``local`` driver has to handle, on the real engine: the service port moving,
a port taken by another program, SIGTERM, a live version started by an older deployer, and
``plan`` against what is live. (The scenarios every driver shares: tests/conformance/.)"""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployer.targets.local.driver import free_port
from tests.conformance.harness import (
    Load,
    ModelRepo,
    finish,
    interrupt,
    score_once,
    wait_until_answers,
)
from tests.conformance.platforms import LocalPlatform, local_platform

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def repo(
    tmp_path: Path, dev_env: dict[str, str], client: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModelRepo]:
    for name, value in dev_env.items():
        monkeypatch.setenv(name, value)
    with local_platform(tmp_path, dev_env, client) as platform:
        made = ModelRepo(tmp_path / "repo", platform)
        made.write()
        deployed = made.deploy()
        assert deployed.code == 0, deployed.output
        yield made
        made.run("down", "-t", made.target, "--images")


def _move_to(repo: ModelRepo, port: int) -> None:
    assert isinstance(repo.platform, LocalPlatform)
    repo.platform.port = port
    repo.write()


def test_a_port_taken_by_another_program_keeps_the_previous_version(repo: ModelRepo) -> None:
    """The new version passes its tests on its private port, then cannot have the service
    port: nothing changes, and the error says why."""
    before = repo.live()
    old_url = repo.platform.service_url()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        _move_to(repo, taken)
        deployed = repo.deploy()
    assert deployed.code == 1, deployed.output
    error = deployed.target["error"]
    assert f"port {taken} is in use by another program" in error
    assert f"the previous version {before[0]} serves" in error
    assert repo.live() == before and repo.leftovers() == []
    assert score_once(old_url) > 0


def test_moving_the_service_to_another_port(repo: ModelRepo) -> None:
    old_url = repo.platform.service_url()
    _move_to(repo, free_port())
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert deployed.target["scoring_uri"] == repo.platform.service_url() != old_url
    assert len(repo.live()) == 1 and repo.leftovers() == []
    assert score_once(repo.platform.service_url()) > 0
    with pytest.raises(ConnectionRefusedError):
        score_once(old_url)


def test_sigterm_rolls_back_like_ctrl_c(repo: ModelRepo) -> None:
    """What a CI runner sends when a job is cancelled."""
    before = repo.live()
    repo.write(ready_timeout_s=600, CONFORMANCE_INIT_DELAY_S="3600")
    proc = repo.start_deploy()
    deadline = time.monotonic() + 120
    while not any("-candidate" in item for item in repo.leftovers()):
        assert time.monotonic() < deadline, "no candidate was started"
        time.sleep(0.2)
    interrupt(proc, signal.SIGTERM)
    output = finish(proc)
    assert proc.returncode == 1, output
    assert repo.report()["targets"][0]["error"].startswith("interrupted; rolled back")
    assert repo.live() == before and repo.leftovers() == []


def test_plan_compares_with_what_is_live(repo: ModelRepo) -> None:
    plan = repo.run("plan", "-t", repo.target, "--report-dir", str(repo.root / "plan-reports"))
    assert plan.returncode == 0, plan.stderr
    assert "compared with what is live" in plan.stdout
    assert "  image " not in plan.stdout  # nothing changes
    (repo.root / "model" / "NOTES.txt").write_text("retrained\n")
    plan = repo.run("plan", "-t", repo.target, "--report-dir", str(repo.root / "plan-reports"))
    assert "  image 127.0.0.1:5000/" in plan.stdout, plan.stdout


def test_a_live_version_from_an_older_deployer_is_replaced_once_with_a_stop(
    repo: ModelRepo, client: Any
) -> None:
    """Its server cannot share its socket (no control command in its image): the new version
    takes the port after it stops, with a warning; from then on, switches drop nothing."""
    repo.run("down", "-t", repo.target)
    assert isinstance(repo.platform, LocalPlatform)
    port = repo.platform.port
    image = next(
        tag
        for image in client.images.list(name=f"127.0.0.1:5000/{repo.service}")
        for tag in image.tags
    )
    # What an older deployer left: the base-name label, and a server without the control
    # protocol (here: Python's own, with deployer's code out of reach).
    client.containers.run(
        image,
        ["python", "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        entrypoint=[],
        name=f"{repo.service}-{repo.target}-0ld",
        labels={"ai.deployer.base-name": f"{repo.service}-{repo.target}"},
        environment={"PYTHONPATH": "/nowhere", "DEPLOYER_SERVER_PORT": str(port)},
        network_mode="host",
        detach=True,
    )
    deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert "predates zero-downtime switching" in deployed.output
    assert len(repo.live()) == 1 and repo.leftovers() == []
    assert score_once(repo.platform.service_url()) > 0
    assert os.environ.get("REGISTRY_PASSWORD", "") not in deployed.output


def test_a_switch_between_two_worker_versions_drops_no_request(repo: ModelRepo) -> None:
    """server.workers: 2 on both sides: each version's supervisor hands the socket over."""
    repo.template = repo.template.replace("workers: 1\n", "workers: 2\n")
    repo.write(BENCH="two-workers")
    first = repo.deploy()
    assert first.code == 0, first.output
    repo.write(BENCH="two-workers-again")
    with Load(repo.platform.service_url()).running() as load:
        deployed = repo.deploy()
    assert deployed.code == 0, deployed.output
    assert deployed.target["status"] == "deployed"
    assert len(repo.live()) == 1 and repo.leftovers() == []
    assert load.failed == 0, str(load)
    assert load.ok > 0


def test_a_live_version_that_crashes_is_restarted_on_the_service_port(
    repo: ModelRepo, client: Any
) -> None:
    """After the switch the live container has the restart policy of a service, and its
    server, marked promoted, binds the service port again by itself."""
    (name,) = [
        c.name
        for c in client.containers.list(
            filters={"label": f"ai.deployer.base-name={repo.service}-{repo.target}"}
        )
    ]
    container = client.containers.get(name)
    assert container.attrs["HostConfig"]["RestartPolicy"]["Name"] == "unless-stopped"
    # SIGKILL to the server from inside (a crash, not a `docker stop`, which Docker would
    # take as wanted and not restart).
    kill = (
        "import os, signal\n"
        "for pid in os.listdir('/proc'):\n"
        "    if pid.isdigit() and b'deployer.serving' in open(f'/proc/{pid}/cmdline', 'rb').read()"
        " and int(pid) != os.getpid():\n"
        "        os.kill(int(pid), signal.SIGKILL)\n"
    )
    container.exec_run(["python", "-c", kill])
    deadline = time.monotonic() + 60
    while client.containers.get(name).attrs["RestartCount"] < 1:
        assert time.monotonic() < deadline, "the container was not restarted"
        time.sleep(0.2)
    wait_until_answers(repo.platform.service_url(), within_s=60)
    assert repo.live() == [container.labels["ai.deployer.revision"]]
