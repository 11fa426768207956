"""In-process tests of the pieces: settings, the Azure ML shims, imports, requirements."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest
from werkzeug.exceptions import UnsupportedMediaType

from deployer.serving import compat
from deployer.serving.aml_request import build_request
from deployer.serving.aml_response import AMLResponse
from deployer.serving.config import DEFAULT_MAX_REQUEST_BYTES, drain_s, parse_settings

from .conftest import REPO

SERVING = REPO / "deployer" / "serving"
BASE = {"AZUREML_ENTRY_SCRIPT": "s.py", "AZUREML_MODEL_DIR": "m"}


# Settings -------------------------------------------------------------------------------------
def test_defaults_and_environment() -> None:
    s = parse_settings([], BASE)
    assert (s.entry_script, s.model_dir, s.host, s.port, s.workers) == (
        "s.py",
        "m",
        "127.0.0.1",
        5001,
        1,
    )
    assert s.max_request_bytes == DEFAULT_MAX_REQUEST_BYTES == 104857600
    env = {
        **BASE,
        "WORKER_COUNT": "3",
        "SCORING_TIMEOUT_MS": "250",
        "DEPLOYER_SERVER_HOST": "::1",
        "DEPLOYER_SERVER_PORT": "8080",
        "DEPLOYER_MAX_REQUEST_BYTES": "10",
    }
    s = parse_settings([], env)
    assert (s.workers, s.scoring_timeout_ms, s.host, s.port, s.max_request_bytes) == (
        3,
        250,
        "::1",
        8080,
        10,
    )


def test_flags_win_over_environment() -> None:
    env = {**BASE, "WORKER_COUNT": "3", "DEPLOYER_SERVER_PORT": "8080", "SERVER_PORT": "9"}
    s = parse_settings(
        [
            "--workers",
            "2",
            "--port",
            "7000",
            "--entry-script",
            "x.py",
            "--max-request-bytes",
            "5",
            "--scoring-timeout-ms",
            "0",
        ],
        env,
    )
    assert (s.workers, s.port, s.entry_script, s.max_request_bytes) == (2, 7000, "x.py", 5)
    assert s.scoring_timeout_ms == 0
    # azmlinfsrv's SERVER_PORT is an alias, below ours; its flag spellings work too.
    assert parse_settings([], {**BASE, "SERVER_PORT": "9"}).port == 9
    s = parse_settings(["--entry_script", "a.py", "--model_dir", "d", "--worker_count", "4"], {})
    assert (s.entry_script, s.model_dir, s.workers) == ("a.py", "d", 4)


def test_handover_settings() -> None:
    s = parse_settings([], BASE)
    assert (s.candidate_port, s.instance, s.state_dir) == (None, None, "/tmp/deployer-serving")
    env = {
        **BASE,
        "DEPLOYER_CANDIDATE_PORT": "7001",
        "DEPLOYER_INSTANCE": "svc-1.v2_a",
        "DEPLOYER_STATE_DIR": "/state",
    }
    s = parse_settings([], env)
    assert (s.candidate_port, s.instance, s.state_dir) == (7001, "svc-1.v2_a", "/state")
    s = parse_settings(["--candidate-port", "7002", "--instance", "x", "--state-dir", "/s"], env)
    assert (s.candidate_port, s.instance, s.state_dir) == (7002, "x", "/s")
    # Workers get the same settings back from the flags.
    assert parse_settings(s.to_argv(), {}) == s
    assert parse_settings(["--instance", "a" * 100], BASE).instance == "a" * 100


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        ([], {"AZUREML_MODEL_DIR": "m"}, "--entry-script"),
        ([], {**BASE, "WORKER_COUNT": "zero"}, "WORKER_COUNT"),
        (["--workers", "0"], BASE, "--workers"),
        (["--port", "70000"], BASE, "--port"),
        (["--candidate-port", "7001"], BASE, "needs --instance"),
        (["--candidate-port", "5001", "--instance", "x"], BASE, "must differ"),
        (["--instance", "a/b"], BASE, "--instance"),
        (["--instance", "a" * 101], BASE, "--instance"),
        ([], {**BASE, "DEPLOYER_INSTANCE": "a b"}, "DEPLOYER_INSTANCE"),
    ],
)
def test_bad_settings_exit_2(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_settings(argv, env)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err


def test_cli_main_returns_2_on_bad_usage(monkeypatch: pytest.MonkeyPatch) -> None:
    from deployer.serving.cli import main

    for name in BASE:
        monkeypatch.delenv(name, raising=False)
    assert main(["--workers", "x"]) == 2
    assert main(["--help"]) == 0


# The AML shims (werkzeug's Request/Response: tests/serving/test_rawhttp.py) -----------------------
def test_aml_request_like_flask() -> None:
    req = build_request(
        "POST",
        "/score",
        b"a=1&a=2",
        [(b"Content-Type", b"application/json"), (b"Host", b"h:1")],
        b'{"k": [1]}',
        remote_addr=None,
    )
    assert req.args.getlist("a") == ["1", "2"]
    assert req.full_path == "/score?a=1&a=2"
    assert req.url == "http://h:1/score?a=1&a=2"
    assert req.get_json() == {"k": [1]}
    assert req.json == {"k": [1]}
    assert req.get_data(as_text=True) == '{"k": [1]}'
    assert req.is_json
    text = build_request(
        "POST", "/score", b"", [(b"Content-Type", b"text/plain")], b"{}", remote_addr=None
    )
    assert text.get_json(silent=True) is None
    assert text.get_json(force=True) == {}
    text = build_request(
        "POST", "/score", b"", [(b"Content-Type", b"text/plain")], b"{}", remote_addr=None
    )
    with pytest.raises(UnsupportedMediaType, match="Content-Type"):  # Flask 3's 415
        text.get_json()


def test_aml_response_matches_azure_ml_construction() -> None:
    r = AMLResponse({"a": 1}, 201, json_str=True)
    assert (r.status_code, r.get_data(), r.headers["Content-Type"]) == (
        201,
        b'{"a": 1}',
        "application/json",
    )
    assert r.headers["x-ms-run-function-failed"] == "False"
    r = AMLResponse("text", 200, {"Content-Type": "text/plain", "X-A": "1, 2"})
    assert r.headers.getlist("Content-Type") == ["text/plain"]
    assert r.headers.getlist("X-A") == ["1", "2"]
    assert AMLResponse(None, 200).get_data() == b"{}"
    assert AMLResponse(b"x", 500, run_function_failed=True).headers["x-ms-run-function-failed"] == (
        "True"
    )


def test_import_aliases_defer_to_real_modules(tmp_path: Path) -> None:
    """Our shims fill in only what no installed package provides."""
    (tmp_path / "azureml").mkdir()  # a real namespace package, as azureml-core ships
    (tmp_path / "azureml" / "core.py").write_text("REAL = True\n")
    code = (
        "import sys; from deployer.serving import compat; compat.install()\n"
        "import azureml.core\n"
        "from azureml.contrib.services.aml_request import rawhttp, AMLRequest\n"
        "from azureml_inference_server_http.api.aml_response import AMLResponse\n"
        "import deployer.serving.aml_request as ours\n"
        "assert azureml.core.REAL and rawhttp is ours.rawhttp, 'aliased'\n"
        "assert sys.modules['azureml.contrib.services.aml_request'] is ours\n"
        "print('ok')\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": f"{tmp_path}:{REPO}"},
    )
    assert out.stdout.strip() == "ok", out.stderr


def test_aliases_are_our_modules(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))  # undone after the test
    monkeypatch.setattr(sys, "modules", dict(sys.modules))
    compat.install()
    compat.install()  # idempotent
    assert sum(isinstance(f, compat.AzureMLShimFinder) for f in sys.meta_path) == 1
    module = importlib.import_module("azureml_inference_server_http.api.aml_request")
    assert module is importlib.import_module("deployer.serving.aml_request")


# Packaging: what the scoring image may import ------------------------------------------------
def _top_level_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_serving_imports_only_stdlib_and_its_requirements() -> None:
    requirements = {
        line.split(";")[0].split(">")[0].split("=")[0].strip()
        for line in (SERVING / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert requirements == {"httptools", "werkzeug"}
    # Imported by name at run time only when the user's script uses it (importlib).
    optional = {"inference_schema"}
    allowed = set(sys.stdlib_module_names) | requirements | {"__future__"}
    # werkzeug only where @rawhttp scripts need it (test_rawhttp.py checks the rest).
    rawhttp = {SERVING / "aml_request.py", SERVING / "aml_response.py"}
    for path in sorted(SERVING.rglob("*.py")):
        extra = _top_level_imports(path) - allowed
        assert not extra, f"{path.relative_to(REPO)} imports {extra}"
        if path not in rawhttp:
            assert "werkzeug" not in _top_level_imports(path), path
    assert "inference_schema" in (SERVING / "swagger.py").read_text()
    assert optional.isdisjoint(_top_level_imports(SERVING / "swagger.py"))


def test_serving_does_not_pull_in_the_toolkit() -> None:
    code = (
        "import sys, deployer.serving.cli, deployer.serving.worker\n"
        "bad = {'pydantic', 'jinja2', 'docker', 'yaml', 'azure', 'uvicorn'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize(
    ("scoring_timeout_ms", "expected_s"),
    [(1, 3), (60_000, 62), (60_001, 63), (0, 3_602)],  # 0: no timeout, Azure ML's one hour
)
def test_drain_waits_for_the_longest_run_allowed(scoring_timeout_ms: int, expected_s: int) -> None:
    """SIGTERM lets a request that started just before finish: the scoring timeout, rounded
    up, plus a margin for writing the answer. The targets' stop timeouts add to this."""
    assert drain_s(scoring_timeout_ms) == expected_s


def test_new_limits_come_from_flags_or_the_environment() -> None:
    env = {
        **BASE,
        "DEPLOYER_LIMIT_CONCURRENCY": "7",
        "DEPLOYER_MAX_CONNECTIONS": "9",
        "DEPLOYER_HEADER_TIMEOUT_S": "3",
    }
    s = parse_settings(["--max-connections", "11"], env)
    assert (s.limit_concurrency, s.max_connections, s.header_timeout_s) == (7, 11, 3)
    assert parse_settings(s.to_argv(), {}) == s
