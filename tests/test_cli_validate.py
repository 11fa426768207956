"""``deployer validate`` as users run it: the summary line, exit codes, no tracebacks."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from deployer.cli import main
from tests.config.corpus import INVALID, Case
from tests.conftest import EXAMPLE

# The console script installed beside the interpreter running the tests (.venv/bin).
DEPLOYER = Path(sys.executable).parent / "deployer"


def test_a_valid_config_prints_one_summary_line(capsys: pytest.CaptureFixture[str]) -> None:
    config = EXAMPLE / "deploy.yaml"

    assert main(["validate", "-c", str(config)]) == 0

    out, err = capsys.readouterr()
    assert err == ""
    assert out.count("\n") == 1
    assert re.fullmatch(
        rf"{re.escape(str(config))}: valid: service 'diabetes', "
        r"model diabetes-ridge:[1-9][0-9]*, targets: local \(local\), staging \(aci\), "
        r"production \(kubernetes\), batch \(functions\), edge \(iot_edge\)\n",
        out,
    )


def test_validate_reads_deploy_yaml_in_the_current_folder_by_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    Case(INVALID / "service-name-uppercase.yaml").install(tmp_path)
    monkeypatch.chdir(tmp_path)

    assert main(["validate"]) == 2
    assert capsys.readouterr().err.startswith("deploy.yaml:4:7: name: 'Diabetes' is not")


def test_problems_name_files_as_the_config_was_given(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """With -c repo/deploy.yaml, each line names repo/...: editors and CI jump to it."""
    Case(INVALID / "conda-file-python-mismatch.yaml").install(tmp_path / "repo")
    monkeypatch.chdir(tmp_path)

    assert main(["validate", "-c", "repo/deploy.yaml"]) == 2

    lines = capsys.readouterr().err.splitlines()
    assert [line.split(": ", 1)[0] for line in lines[:-1]] == [
        "repo/deploy.yaml:16:30",
        "repo/environment_python310.yml:4:5",
    ]


def test_a_missing_config_file_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere" / "deploy.yaml"

    assert main(["validate", "-c", str(missing)]) == 2
    assert capsys.readouterr().err == (
        f"error: {missing}: no such file (pass the config with -c PATH)\n"
    )


@pytest.mark.parametrize("name", ["several-problems", "yaml-unclosed-flow-mapping", "empty-file"])
def test_the_installed_command_exits_2_with_every_problem_and_no_traceback(
    name: str, tmp_path: Path
) -> None:
    case = Case(INVALID / f"{name}.yaml")
    case.install(tmp_path)

    result = subprocess.run(
        [str(DEPLOYER), "validate", "-c", "deploy.yaml"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert "Traceback" not in result.stderr
    assert (result.returncode, result.stdout, result.stderr) == (2, "", case.expected_stderr)


def test_the_installed_command_exits_0_on_the_example() -> None:
    result = subprocess.run(
        [str(DEPLOYER), "validate", "-c", str(EXAMPLE / "deploy.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout.startswith(f"{EXAMPLE / 'deploy.yaml'}: valid: service 'diabetes'")


OFFLINE_COMMANDS = {
    "validate": ["validate", "-c", str(EXAMPLE / "deploy.yaml")],
    "schema": ["schema"],
    "render": ["render", "-c", str(EXAMPLE / "deploy.yaml"), "-o", "{tmp}/out"],
    "plan --no-registry-check": [
        "plan",
        "-c",
        str(EXAMPLE / "deploy.yaml"),
        "--no-registry-check",
        "--no-comment",
        "--report-dir",
        "{tmp}/reports",
    ],
}


@pytest.mark.parametrize("github_actions", ["", "true"], ids=["locally", "in GitHub Actions"])
@pytest.mark.parametrize("command", sorted(OFFLINE_COMMANDS))
def test_offline_commands_import_no_sdk(command: str, github_actions: str, tmp_path: Path) -> None:
    """Heavy or optional SDKs load lazily, by the command that needs them: the commands that
    work from deploy.yaml alone need none, and load no target's driver. In GitHub Actions
    neither (where validate also annotates, with deployer's own GitHub code)."""
    argv = [arg.replace("{tmp}", str(tmp_path)) for arg in OFFLINE_COMMANDS[command]]
    probe = (
        "import sys\n"
        "from deployer.cli import main\n"
        f"code = main({argv!r})\n"
        "heavy = ('azure', 'kubernetes', 'docker', 'onnxruntime', 'httpx', 'requests')\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & set(heavy))\n"
        "drivers = sorted(m for m in sys.modules if m.endswith('.driver'))\n"
        "print('LOADED', loaded, drivers, 'GITHUB', 'deployer.github.job' in sys.modules)\n"
        "sys.exit(code)\n"
    )
    # No GitHub event: the plan has no pull request to comment on and no artifacts to read.
    env = {"PATH": "/usr/bin:/bin", "GITHUB_ACTIONS": github_actions}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        env=env,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    in_job = bool(github_actions) and command != "schema"
    assert f"LOADED [] [] GITHUB {in_job}" in result.stdout
