"""Scoring keys from the client's side: read from the variables deploy.yaml names, masked,
sent by ``deployer test``; a missing or unfit key is a UserError saying how to make one."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from deployer.cli import main
from deployer.config.loader import load_config
from deployer.errors import UserError
from deployer.report import DeployReport, TargetReport, to_json, to_markdown
from deployer.scoring_keys import how_to_call, key_env_names, scoring_keys, uses_keys
from deployer.secrets import Secrets, run_secrets
from tests.conftest import EXAMPLE

PRIMARY = "primary-k3y-0123456789abcdef"
SECONDARY = "second-K3Y-fedcba9876543210"


def _staging(example_copy: Callable[..., Path], settings: str = "auth: key}") -> object:
    config = example_copy(("auth: key}", settings))
    return load_config(config).targets["staging"]


def test_the_default_variable_is_scoring_key(example_copy: Callable[..., Path]) -> None:
    target = load_config(EXAMPLE / "deploy.yaml").targets["staging"]
    keys = scoring_keys(target, {"SCORING_KEY": f" {PRIMARY}\n"})
    assert keys.env_names == ("SCORING_KEY",)
    assert keys.values == (PRIMARY,)  # stripped, as the server strips it
    assert keys.headers == {"Authorization": f"Bearer {PRIMARY}"}
    assert PRIMARY not in repr(keys)
    assert (
        keys.usage() == "Authorization: Bearer $SCORING_KEY (the key is the CI secret SCORING_KEY)"
    )


def test_both_keys_are_read_and_registered_as_secrets(example_copy: Callable[..., Path]) -> None:
    target = _staging(example_copy, "auth: key, key_env: K1, secondary_key_env: K2}")
    secrets = Secrets()
    keys = scoring_keys(target, {"K1": PRIMARY, "K2": SECONDARY}, secrets)
    assert keys.env_names == ("K1", "K2")
    assert keys.values == (PRIMARY, SECONDARY)
    assert keys.headers == {"Authorization": f"Bearer {PRIMARY}"}  # tests send the primary
    assert secrets.values == [PRIMARY, SECONDARY]


def test_an_unset_secondary_is_left_out(example_copy: Callable[..., Path]) -> None:
    target = _staging(example_copy, "auth: key, key_env: K1, secondary_key_env: K2}")
    assert scoring_keys(target, {"K1": PRIMARY, "K2": ""}).values == (PRIMARY,)
    assert scoring_keys(target, {"K1": PRIMARY}).env_names == ("K1",)


@pytest.mark.parametrize("value", [None, "", "   "])
def test_a_missing_primary_says_how_to_create_one(
    value: str | None, example_copy: Callable[..., Path]
) -> None:
    target = _staging(example_copy, "auth: key, key_env: STAGING_KEY}")
    env = {} if value is None else {"STAGING_KEY": value}
    with pytest.raises(UserError) as raised:
        scoring_keys(target, env)
    message = str(raised.value)
    assert "environment variable STAGING_KEY" in message
    assert 'python -c "import secrets; print(secrets.token_urlsafe(32))"' in message
    assert "CI secret named STAGING_KEY" in message
    assert "${{ secrets.STAGING_KEY }}" in message


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("short-key", "is shorter than 16 characters; create one with python -c"),
        ("a key with spaces inside", "printable ASCII without spaces"),
        ("${SOME_LONG_VARIABLE_NAME}", "unfilled ${...} placeholder"),
    ],
)
def test_an_unfit_key_is_refused_as_the_server_would_and_still_masked(
    value: str, problem: str, example_copy: Callable[..., Path]
) -> None:
    target = _staging(example_copy, "auth: key, key_env: K1, secondary_key_env: K2}")
    for env in ({"K1": value}, {"K1": PRIMARY, "K2": value}):
        secrets = Secrets()
        with pytest.raises(UserError, match=problem.replace("$", r"\$").replace(".", r"\.")) as e:
            scoring_keys(target, env, secrets)
        assert value not in str(e.value)
        assert value in secrets.values  # masked before anything could print it


def test_targets_without_key_auth(example_copy: Callable[..., Path]) -> None:
    config = load_config(EXAMPLE / "deploy.yaml")
    assert [name for name, t in config.targets.items() if uses_keys(t)] == ["staging"]
    assert key_env_names(config.targets["local"]) == ()
    assert key_env_names(_staging(example_copy, "auth: none}")) == ()
    with pytest.raises(ValueError, match="auth: key"):
        scoring_keys(config.targets["local"], {})


def test_run_secrets_masks_the_keys_deploy_yaml_names(example_copy: Callable[..., Path]) -> None:
    config = load_config(
        example_copy(("auth: key}", "auth: key, key_env: K1, secondary_key_env: K2}"))
    )
    env = {"K1": PRIMARY, "K2": f"{SECONDARY}\n", "DEPLOYER_SCORING_KEY": "server-side-key"}
    secrets = run_secrets(config.registry, env, config.targets.values())
    assert set(secrets.values) == {PRIMARY, f"{SECONDARY}\n", SECONDARY, "server-side-key"}
    assert secrets.masker().text(f"Bearer {PRIMARY} / {SECONDARY}") == "Bearer *** / ***"


class _Keyed(BaseHTTPRequestHandler):
    """Answers 200 [2, 4] and remembers the Authorization header of each request."""

    protocol_version = "HTTP/1.1"
    seen: ClassVar[list[str | None]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.seen.append(self.headers["Authorization"])
        payload = json.dumps([2, 4]).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def keyed_uri() -> Iterator[str]:
    _Keyed.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Keyed)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/score"
    server.shutdown()
    server.server_close()


def _config_with_one_test(tmp_path: Path) -> Path:
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "deploy.yaml"
    text = config.read_text()
    start, end = text.index("tests:"), text.index("targets:")
    config.write_text(
        text[:start]
        + "tests:\n  requests:\n    - name: doubles\n      json: {data: [1, 2]}\n"
        + "      expect: {json: [2, 4]}\n  latency_requests: 5\n"
        + text[end:]
    )
    return config


def test_deployer_test_sends_the_key_to_a_keyed_target(
    keyed_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SCORING_KEY", PRIMARY)
    config = _config_with_one_test(tmp_path)
    code = main(["test", "-c", str(config), "-t", "staging", "--uri", keyed_uri])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert _Keyed.seen and set(_Keyed.seen) == {f"Bearer {PRIMARY}"}  # tests and latency
    assert PRIMARY not in out + err


def test_deployer_test_without_the_key_says_how_to_make_one(
    keyed_uri: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SCORING_KEY", raising=False)
    config = _config_with_one_test(tmp_path)
    code = main(["test", "-c", str(config), "-t", "staging", "--uri", keyed_uri])
    assert code == 2
    assert "SCORING_KEY" in capsys.readouterr().err
    assert _Keyed.seen == []


def test_a_target_without_key_auth_sends_no_key(
    keyed_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCORING_KEY", PRIMARY)
    config = _config_with_one_test(tmp_path)
    assert main(["test", "-c", str(config), "-t", "local", "--uri", keyed_uri]) == 0
    assert _Keyed.seen and set(_Keyed.seen) == {None}


def test_the_report_says_how_to_call_without_the_key() -> None:
    entry = TargetReport("staging", "aci", "deployed", "img:1", scoring_uri="http://h/score")
    entry.auth_headers = ["Authorization"]
    entry.auth = how_to_call(("K1", "K2"))
    report = DeployReport("diabetes", "m", "1", "deploy.yaml", [entry])
    masker = Secrets([PRIMARY]).masker()
    markdown = to_markdown(report, masker)
    assert (
        "Calling staging: send Authorization: Bearer $K1 (the key is the CI secret K1; K2 is "
        "accepted too, for a rotation)." in markdown
    )
    data = json.loads(to_json(report, masker))["targets"][0]
    assert data["auth_headers"] == ["Authorization"]
    assert data["auth"].startswith("Authorization: Bearer $K1")
    assert how_to_call(()) == ""
