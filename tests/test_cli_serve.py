"""`deployer serve` is the scoring server of the images, started from the toolkit's CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from deployer.cli import main
from tests.conftest import EXAMPLE
from tests.serving.conftest import free_port


def test_serve_help_is_the_servers_own(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert "--entry-script" in capsys.readouterr().out


def test_deployer_serve_scores_the_example() -> None:
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "deployer",
            "serve",
            "--entry-script",
            str(EXAMPLE / "score.py"),
            "--model-dir",
            str(EXAMPLE),
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                    break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                assert server.poll() is None, server.stderr.read() if server.stderr else ""
                assert time.monotonic() < deadline, "the server did not become ready"
                time.sleep(0.1)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/score",
            data=json.dumps({"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read()) == pytest.approx([4640.521], abs=1e-3)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_serve_usage_names_deployer_serve(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: deployer serve ")
    assert main(["serve", "--port", "nope"]) == 2
    assert "usage: deployer serve " in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "error"),
    [
        (
            ["--entry-script", "missing.py", "--model-dir", "."],
            "deployer serve: error: entry script missing.py does not exist "
            "(--entry-script, AZUREML_ENTRY_SCRIPT)",
        ),
        (
            ["--entry-script", ".", "--model-dir", "."],
            "deployer serve: error: entry script . is a folder, not a file "
            "(--entry-script, AZUREML_ENTRY_SCRIPT)",
        ),
        (
            ["--entry-script", str(EXAMPLE / "score.py"), "--model-dir", "no-such-model"],
            "deployer serve: error: model folder no-such-model does not exist "
            "(--model-dir, AZUREML_MODEL_DIR)",
        ),
    ],
)
def test_a_missing_entry_script_or_model_folder_is_one_line_and_exit_2_before_listening(
    flags: list[str], error: str, tmp_path: Path
) -> None:
    port = free_port()
    done = subprocess.run(
        [sys.executable, "-m", "deployer", "serve", *flags, "--port", str(port)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.strip() == error
    assert "listening" not in done.stdout + done.stderr
