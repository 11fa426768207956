"""What users read when a registry says no, and how progress is shown."""

from __future__ import annotations

import io

import pytest

from deployer.build import registry_error
from deployer.buildcontext import ImageRef
from deployer.config.model import Registry
from deployer.console import ConsoleProgress
from deployer.errors import UserError
from deployer.events import Event
from deployer.registry_auth import credentials_for

REF = ImageRef("127.0.0.1:5000", "diabetes", "0123456789abcdef")


@pytest.mark.parametrize(
    ("engine_says", "user_reads"),
    [
        ("unauthorized: authentication required", "rejected the credentials (401 unauthorized)"),
        ("denied: requested access to the resource is denied", "denied access to diabetes (403)"),
        (
            'Get "http://127.0.0.1:5000/v2/": dial tcp 127.0.0.1:5000: connect: connection refused',
            "registry 127.0.0.1:5000 is unreachable",
        ),
        ("manifest for x not found: 404", "has no repository diabetes (404)"),
    ],
)
def test_registry_errors_become_one_clear_sentence(engine_says: str, user_reads: str) -> None:
    message = registry_error(REF, engine_says)
    assert user_reads in message
    assert "\n" not in message


def test_basic_auth_needs_both_variables() -> None:
    registry = Registry.model_validate({"address": "127.0.0.1:5000", "auth": "basic"})
    with pytest.raises(UserError, match="REGISTRY_PASSWORD is not set"):
        credentials_for(registry, {"REGISTRY_USERNAME": "ci"})
    credentials = credentials_for(registry, {"REGISTRY_USERNAME": "ci", "REGISTRY_PASSWORD": "pw"})
    assert credentials is not None
    assert "pw" not in repr(credentials)


def test_plain_progress_prints_each_state_once_and_no_progress_bars() -> None:
    out = io.StringIO()
    progress = ConsoleProgress(out, tty=False)
    progress(Event("step", "pushing x"))
    progress(Event("progress", "abc: Pushing [=====>    ] 1MB/2MB", key="abc"))
    progress(Event("progress", "abc: Pushed", key="abc"))
    progress(Event("progress", "abc: Pushed", key="abc"))
    assert out.getvalue() == "==> pushing x\n    abc: Pushed\n"


def test_terminal_progress_rewrites_one_status_line() -> None:
    out = io.StringIO()
    progress = ConsoleProgress(out, tty=True)
    progress(Event("progress", "Step 1/3 : FROM python", key="build"))
    progress(Event("progress", "Step 2/3 : RUN pip install", key="build"))
    progress(Event("step", "pushing x"))
    text = out.getvalue()
    assert text.count("\r\x1b[2K") == 3  # two status rewrites, one clear before the step
    assert text.endswith("==> pushing x\n")
