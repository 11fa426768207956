"""The last deploy's report, found among the artifacts of earlier workflow runs."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deployer.github.api import GitHubApi, GitHubError, PermissionDenied, RetryPolicy
from deployer.github.artifacts import last_deploy, report_artifact_name
from tests.github.conftest import INSTALLATION_TOKEN
from tests.github.fake_github import REPOSITORY, FakeGitHub

PRODUCTION = ["production", "edge", "batch"]
JOINT = "deploy-report_deploy_deploy.yaml_batch+edge+production"


def report(*targets: tuple[str, str], command: str = "deploy") -> str:
    """A deploy-report.json naming each target's image."""
    entries = [{"name": name, "status": "deployed", "image": image} for name, image in targets]
    return json.dumps({"service": "diabetes", "command": command, "targets": entries})


def files(text: str) -> dict[str, str]:
    return {"deploy-report.json": text, "deploy-report.md": "### Deploy of `diabetes`\n"}


def client(github: FakeGitHub) -> GitHubApi:
    return GitHubApi(INSTALLATION_TOKEN, github.url, policy=RetryPolicy(sleep=lambda s: None))


def find(github: FakeGitHub, targets: list[str] = PRODUCTION) -> Any:
    return last_deploy(client(github), REPOSITORY, "deploy.yaml", targets, "main")


def test_names_sort_the_targets_and_keep_the_config_apart() -> None:
    assert report_artifact_name("deploy", "./deploy.yaml", ["production", "edge"]) == (
        "deploy-report_deploy_deploy.yaml_edge+production"
    )
    assert report_artifact_name("plan", "models/a:b.yaml", ["edge"]) == (
        "deploy-report_plan_models-a-b.yaml_edge"
    )
    long = report_artifact_name("deploy", "deploy.yaml", [f"target-{i:03d}" for i in range(50)])
    assert len(long) <= 200 and long.startswith("deploy-report_deploy_deploy.yaml_")


def test_the_newest_report_from_the_default_branch_is_used(github: FakeGitHub) -> None:
    github.add_artifact(JOINT, files(report(("production", "r/d:old"))), run_id=11)
    newest = github.add_artifact(
        JOINT,
        files(report(("production", "r/d:1"), ("edge", "r/d:1"), ("batch", "r/d:fn1"))),
        run_id=12,
        created_at="2024-05-02T08:00:00Z",
    )
    # Newer, but not usable: another branch, a fork's run, an expired one, another config.
    later = "2024-05-02T09:00:00Z"
    forged = files(report(("production", "x")))
    github.add_artifact(JOINT, forged, branch="retrain-2024", created_at=later)
    github.add_artifact(JOINT, forged, fork=True, created_at=later)
    github.add_artifact(JOINT, forged, expired=True, created_at=later)
    github.add_artifact(JOINT.replace("deploy.yaml", "other.yaml"), forged, created_at=later)
    baseline = find(github)
    assert baseline is not None
    assert {name: t["image"] for name, t in baseline.targets.items()} == {
        "production": "r/d:1",
        "edge": "r/d:1",
        "batch": "r/d:fn1",
    }
    assert baseline.source == "the deploy report of workflow run 12 (main, commit a1b2c3d)"
    lists = [r.path for r in github.calls("GET") if "/zip" not in r.path]
    query = JOINT.replace("+", "%2B")  # a bare + would be read as a space
    assert lists == [f"/repos/{REPOSITORY}/actions/artifacts?name={query}&per_page=100"]
    zips = [r.path for r in github.calls("GET") if "/zip" in r.path]
    assert zips == [f"/repos/{REPOSITORY}/actions/artifacts/{newest['id']}/zip"]


def test_the_archive_is_fetched_from_its_signed_url_without_the_token(
    github: FakeGitHub,
) -> None:
    github.add_artifact(JOINT, files(report(("production", "r/d:1"))))
    find(github)
    assert github.blobs is not None
    (download,) = github.blobs.requests
    assert download.path.endswith("&sig=Zm9v")
    assert "authorization" not in download.headers
    (api_call,) = [r for r in github.calls() if r.path.endswith("/zip")]
    assert api_call.headers["authorization"] == f"Bearer {INSTALLATION_TOKEN}"


def test_targets_deployed_one_by_one_are_found_one_by_one(github: FakeGitHub) -> None:
    single = "deploy-report_deploy_deploy.yaml_{}"
    github.add_artifact(single.format("production"), files(report(("production", "r/d:2"))))
    github.add_artifact(single.format("edge"), files(report(("edge", "r/d:2"))), run_id=77)
    baseline = find(github)
    assert baseline is not None
    assert set(baseline.targets) == {"production", "edge"}  # batch: never deployed
    assert baseline.source.count("the deploy report of workflow run") == 2


def test_nothing_deployed_yet_is_none(github: FakeGitHub) -> None:
    assert find(github) is None


def test_a_token_without_actions_read_is_refused(github: FakeGitHub) -> None:
    github.no_actions_read.add(INSTALLATION_TOKEN)
    with pytest.raises(PermissionDenied, match="Resource not accessible by integration"):
        find(github)


@pytest.mark.parametrize(
    ("archive", "message"),
    [
        ({"other.txt": "x"}, "holds no deploy-report.json"),
        ({"deploy-report.json": "{not json"}, "not a zip archive with a JSON report"),
        (files(report(("edge", "x"), command="plan")), "is not a deploy report"),
    ],
)
def test_an_artifact_without_a_deploy_report_is_an_error(
    github: FakeGitHub, archive: dict[str, str], message: str
) -> None:
    github.add_artifact("deploy-report_deploy_deploy.yaml_edge", archive)
    with pytest.raises(GitHubError, match=message):
        find(github, ["edge"])
