"""Azurite, Microsoft's storage emulator (blob service only), on a free 127.0.0.1 port.

The ``azurite`` fixture starts ``azurite-blob`` for the test and yields its connection
string (the well-known development account, whose key is public). The binary is
``$DEPLOYER_AZURITE_BLOB``, else the one ``make install`` put in ``AZURITE_DIR`` (npm
package ``azurite``, pinned below), else one on PATH; when none is found, it is installed
with npm into ``AZURITE_DIR``, and the test fails with a clear message if that fails.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

AZURITE_VERSION = "3.35.0"
AZURITE_DIR = Path(os.environ.get("DEPLOYER_AZURITE_DIR", REPO / ".cache" / "azurite"))
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
START_TIMEOUT_S = 30.0


def azurite_blob() -> Path:
    """The azurite-blob executable, installed into AZURITE_DIR when there is none."""
    given = os.environ.get("DEPLOYER_AZURITE_BLOB")
    if given:
        return Path(given)
    cached = AZURITE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if cached.exists():
        return cached
    on_path = shutil.which("azurite-blob")
    if on_path:
        return Path(on_path)
    npm = shutil.which("npm")
    if npm is None:
        pytest.fail("Azurite is not installed and npm is not on PATH: run `make install`")
    AZURITE_DIR.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [
            npm,
            "install",
            "--prefix",
            str(AZURITE_DIR),
            "--no-audit",
            "--no-fund",
            f"azurite@{AZURITE_VERSION}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode != 0 or not cached.exists():
        pytest.fail(
            f"npm could not install azurite@{AZURITE_VERSION} into {AZURITE_DIR}:\n"
            f"{done.stderr[-2000:]}"
        )
    return cached


def connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{ACCOUNT};"
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def azurite(tmp_path: Path) -> Iterator[str]:
    """A fresh Azurite blob service for one test: its connection string."""
    binary = azurite_blob()
    port = _free_port()
    location = tmp_path / "azurite"
    location.mkdir()
    process = subprocess.Popen(
        [
            str(binary),
            "--blobHost",
            "127.0.0.1",
            "--blobPort",
            str(port),
            "--location",
            str(location),
            "--silent",
            "--skipApiVersionCheck",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                stderr = process.stderr.read().decode(errors="replace") if process.stderr else ""
                pytest.fail(f"azurite-blob exited with {process.returncode}: {stderr[-2000:]}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"azurite-blob did not listen on 127.0.0.1:{port}")
                time.sleep(0.1)
        yield connection_string(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
