"""``deployer logs`` for a functions target: the app's container logs read from its SCM site
(Kudu) with a Microsoft Entra token, against the Microsoft.Web double's Kudu; and from
Application Insights when deploy.yaml names the component.

No Functions host runs here (its base image cannot be pulled): the platform's lines come
from the double's state machine, in App Service's words, and the container's own output is
written by the test (``azure.web.write_log``), standing in for what ``init()`` prints.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from deployer.errors import DeployFailed, UserError
from deployer.targets.functions import insights
from tests.doubles.azure import AzureDouble
from tests.targets.test_functions_driver import (
    APP,
    _deploy,
    _driver,
    _env,
    _release,
    _repo,
)


def test_logs_merge_the_platforms_lines_and_the_containers_by_time(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    first = _release(config, "1")
    _deploy(_driver(config, azure, _env()), first)
    azure.web.write_log(APP, "init(): model loaded in 0.4 s")
    lines = _driver(config, azure, _env()).logs("rev-1", 50)
    text = "\n".join(lines)
    assert f"INFO  - Pulling image: {first.image}" in text, text
    assert "initialized successfully and is ready to serve requests" in text, text
    assert lines[-1].endswith("init(): model loaded in 0.4 s"), lines
    assert _driver(config, azure, _env()).logs("rev-1", 2)[-1] == lines[-1]
    assert len(_driver(config, azure, _env()).logs("rev-1", 2)) == 2
    # Read with a token from the same credential: no publishing password was asked for.
    assert not azure.requests(path="publishingcredentials")
    assert ("GET", "/api/logs/docker", 200) in azure.web.scm.requests  # type: ignore[union-attr]


def test_a_start_that_fails_puts_the_platforms_reason_in_the_failure(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure, ready_timeout_s=3)
    azure.never_running(APP)
    with pytest.raises(DeployFailed) as failed:
        _deploy(_driver(config, azure, _env()), _release(config, "1"))
    logs = "\n".join(failed.value.logs)
    assert "didn't respond to HTTP pings on port: 80, failing site start" in logs, logs


def test_follow_streams_new_lines_until_the_app_is_deleted(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    _deploy(_driver(config, azure, _env()), _release(config, "1"))
    driver = _driver(config, azure, _env())
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        for line in driver.follow("rev-1", 3):
            lines.put(line)
        lines.put(None)  # the stream ended

    threading.Thread(target=read, daemon=True).start()
    seen = [lines.get(timeout=10) for _ in range(4)]  # the last 3, then Kudu's welcome
    assert "Welcome, you are now connected to log-streaming service." in str(seen[-1]), seen
    azure.web.write_log(APP, "scored batch 7")
    assert str(lines.get(timeout=10)).endswith("scored batch 7")
    _driver(config, azure, _env()).remove(images=False)
    assert lines.get(timeout=10) is None


def test_an_identity_without_publish_rights_is_told_the_role(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    _deploy(_driver(config, azure, _env()), _release(config, "1"))
    azure.revoke(action="sites/publish")
    (line,) = _driver(config, azure, _env()).logs("rev-1", 10)  # best effort: one line
    assert line.startswith(f"[deployer] no logs from {APP}:") and "Website Contributor" in line
    with pytest.raises(UserError, match="Website Contributor"):
        next(iter(_driver(config, azure, _env()).follow("rev-1", 10)))


def test_throttling_and_a_restarting_scm_site_are_retried(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config = _repo(tmp_path, azure)
    _deploy(_driver(config, azure, _env()), _release(config, "1"))
    scm = azure.web.scm
    assert scm is not None
    scm.throttle(times=1, retry_after=1)
    scm.fail(503, times=1)
    azure.web.write_log(APP, "after the retries")
    lines = _driver(config, azure, _env()).logs("rev-1", 5)
    assert lines[-1].endswith("after the retries"), lines
    statuses = [status for _, path, status in scm.requests if path == "/api/logs/docker"]
    assert statuses[-3:] == [429, 503, 200], statuses


def test_deployer_logs_prints_the_apps_lines(tmp_path: Path, azure: AzureDouble) -> None:
    config = _repo(tmp_path, azure)
    _deploy(_driver(config, azure, _env()), _release(config, "1"))
    azure.web.write_log(APP, "Worker process started and initialized.")
    done = subprocess.run(
        [sys.executable, "-m", "deployer", "logs", "-t", "batch", "--tail", "2"],
        cwd=config.parent,
        env={**os.environ, **azure.env(), **_env()},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    printed = done.stdout.splitlines()
    assert len(printed) == 2 and printed[-1].endswith("Worker process started and initialized.")


# Application Insights ----------------------------------------------------------------------
COMPONENT = (
    "/subscriptions/{s}/resourceGroups/ml-rg/providers/Microsoft.Insights/components/diabetes-ai"
)


def _insights_repo(tmp_path: Path, azure: AzureDouble) -> tuple[Path, str]:
    component = COMPONENT.format(s=azure.subscription_id)
    azure.log_analytics.add(component)
    return _repo(tmp_path, azure, application_insights=component), component


def test_logs_come_from_application_insights_when_deploy_yaml_names_it(
    tmp_path: Path, azure: AzureDouble
) -> None:
    config, component = _insights_repo(tmp_path, azure)
    now = datetime.now(UTC)
    emit = azure.log_analytics.emit
    emit(component, "traces", timestamp=now - timedelta(minutes=3), message="Host started",
         severityLevel=1, cloud_RoleName=APP, cloud_RoleInstance="a1b2")  # fmt: skip
    emit(component, "traces", timestamp=now - timedelta(minutes=2), message="another app's",
         severityLevel=1, cloud_RoleName="other-fn")  # fmt: skip
    emit(component, "exceptions", timestamp=now - timedelta(minutes=1), severityLevel=3,
         outerMessage="ValueError: bad input", cloud_RoleName=APP.upper())  # fmt: skip
    emit(component, "traces", timestamp=now - timedelta(days=2), message="too old",
         cloud_RoleName=APP)  # fmt: skip
    lines = _driver(config, azure, _env()).logs("rev-1", 10)
    assert len(lines) == 2, lines
    assert lines[0].endswith("INFO [a1b2] Host started"), lines
    assert lines[1].endswith("ERROR exception: ValueError: bad input"), lines
    (asked,) = [r for r in azure.log_analytics.requests if r.status == 200]
    assert asked.path.lower().startswith(f"/v1{component.lower()}/query")
    assert "take 10" in asked.body["query"]
    assert not azure.web.scm or not azure.web.scm.requests  # Kudu was not asked


def test_following_application_insights_shows_late_rows_once(
    tmp_path: Path, azure: AzureDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(insights, "POLL_S", 0.2)
    config, component = _insights_repo(tmp_path, azure)
    now = datetime.now(UTC)
    azure.log_analytics.emit(component, "traces", timestamp=now - timedelta(minutes=1),
                             message="before", cloud_RoleName=APP)  # fmt: skip
    lines: queue.Queue[str] = queue.Queue()
    follow = _driver(config, azure, _env()).follow("rev-1", 5)

    def read() -> None:
        with contextlib.suppress(DeployFailed):  # the double stops with the test
            for line in follow:
                lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    assert lines.get(timeout=10).endswith("before")
    azure.log_analytics.emit(component, "traces", message="new", cloud_RoleName=APP)
    assert lines.get(timeout=10).endswith("new")
    # Ingested late: its time is before the newest row shown, and it still shows, once.
    azure.log_analytics.emit(component, "traces", timestamp=now - timedelta(seconds=30),
                             message="late", cloud_RoleName=APP)  # fmt: skip
    assert lines.get(timeout=10).endswith("late")
    time.sleep(1)  # several polls: nothing is shown twice
    assert lines.empty()


def test_application_insights_refusals_name_the_fix(tmp_path: Path, azure: AzureDouble) -> None:
    config, component = _insights_repo(tmp_path, azure)
    azure.log_analytics.deny(component)
    (line,) = _driver(config, azure, _env()).logs("rev-1", 10)
    assert "Monitoring Reader" in line, line
    with pytest.raises(UserError, match="Monitoring Reader"):
        next(iter(_driver(config, azure, _env()).follow("rev-1", 10)))
    azure.log_analytics.allow(component)
    throttled = azure.log_analytics.throttle(times=1, retry_after=1)
    assert _driver(config, azure, _env()).logs("rev-1", 10) == []  # retried, then no rows
    assert throttled.seen == 1
    # A custom cloud whose description lacks the Logs endpoint: said, before any call.
    cloud = json.loads((tmp_path / "azure" / "cloud.json").read_text())
    del cloud["endpoints"]["logAnalyticsResourceId"]
    bare = tmp_path / "bare-cloud.json"
    bare.write_text(json.dumps(cloud))
    driver = _driver(config, azure, {**_env(), "DEPLOYER_AZURE_CLOUD": str(bare)})
    with pytest.raises(UserError, match="logAnalyticsResourceId"):
        next(iter(driver.follow("rev-1", 10)))
