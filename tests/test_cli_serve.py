"""`deployer serve` is the scoring server of the images, started from the toolkit's CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

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
