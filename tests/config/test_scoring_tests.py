"""deploy.yaml's tests: requests as real endpoints take them, and what their answers must be."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from deployer.config.loader import load_config
from deployer.errors import ConfigError
from deployer.schema import deploy_schema
from tests.config.corpus import FILES

BASE = """\
version: 1
name: images
model: {path: model}
entry_script: score.py
registry: {address: 127.0.0.1:5000}
targets:
  local: {type: local}
tests:
  requests:
"""
EVERY_FIELD = """\
    - name: upload
      files: {image: test_image.png, mask: samples/mask.png}
      form: {caption: a cat}
      headers: {X-Api-Version: "2024-01"}
      expect:
        status: 200
        headers: {x-model-version: "2"}
        content_type: application/octet-stream
        body_sha256: 9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08
    - name: raw
      method: PUT
      body_file: test_image.png
      headers: {Content-Type: image/png}
    - name: search
      method: GET
      query: {q: [red car, blue], limit: "3"}
      expect:
        json: {hits: []}
        content_type: "application/json; charset=utf-8"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    shutil.copytree(FILES, tmp_path, dirs_exist_ok=True)
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "mask.png").write_bytes(b"\x00")
    return tmp_path


def _load(folder: Path, requests: str) -> Any:
    config = folder / "deploy.yaml"
    config.write_text(BASE + requests)
    return load_config(config)


def test_every_new_setting_loads_with_its_meaning(folder: Path) -> None:
    upload, raw, search = _load(folder, EVERY_FIELD).tests.requests
    assert upload.method == "POST"  # the default
    assert upload.files == {"image": "test_image.png", "mask": "samples/mask.png"}
    assert upload.form == {"caption": "a cat"}
    assert upload.expect.headers == {"x-model-version": "2"}
    assert upload.expect.content_type == "application/octet-stream"
    assert upload.expect.body_sha256 is not None and upload.expect.body_sha256.startswith("9F86")
    assert (raw.method, raw.body_file) == ("PUT", "test_image.png")
    assert (search.method, search.query) == ("GET", {"q": ["red car", "blue"], "limit": "3"})


def test_files_are_not_looked_up_when_files_are_not_checked(folder: Path) -> None:
    """`deployer test` and `status` load without checking files: the verifier reads them."""
    config = folder / "deploy.yaml"
    config.write_text(BASE + "    - name: gone\n      body_file: gone.png\n")
    (test,) = load_config(config, check_files=False).tests.requests
    assert test.body_file == "gone.png"


def test_a_symbolic_link_out_of_the_folder_is_a_problem_at_its_line(
    folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    secret = tmp_path_factory.mktemp("elsewhere") / "id_rsa"
    secret.write_text("key")
    (folder / "samples" / "key.png").symlink_to(secret)
    with pytest.raises(ConfigError) as raised:
        _load(folder, "    - name: leak\n      files: {image: samples/key.png}\n")
    (problem,) = raised.value.problems
    assert (problem.line, problem.path) == (11, "tests.requests[0].files.image")
    assert problem.message == (
        "'samples/key.png' leads outside the folder of deploy.yaml (through a symbolic link)"
    )


def test_a_link_inside_the_folder_is_fine(folder: Path) -> None:
    (folder / "samples" / "same.png").symlink_to(folder / "test_image.png")
    _load(folder, "    - name: ok\n      body_file: samples/same.png\n")


def _schema_check(requests: str) -> None:
    data = yaml.safe_load(BASE + requests)
    jsonschema.Draft202012Validator(deploy_schema()).validate(data)


def test_editors_accept_every_new_setting() -> None:
    _schema_check(EVERY_FIELD)


@pytest.mark.parametrize(
    "bodies",
    [
        "json: {}\n      body: x",
        "body_file: a.png\n      files: {f: a.png}",
        "json: {}\n      form: {a: b}",
    ],
)
def test_editors_flag_two_bodies_in_one_request(bodies: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _schema_check(f"    - name: two\n      {bodies}\n")


@pytest.mark.parametrize(
    "setting",
    [
        "method: FETCH",
        "query: {n: 3}",
        "expect: {content_type: png}",
        "expect: {body_sha256: abc}",
        "expect: {headers: {Bad Name: x}}",
    ],
)
def test_editors_flag_what_validation_rejects(setting: str) -> None:
    with pytest.raises(jsonschema.ValidationError):
        _schema_check(f"    - name: bad\n      {setting}\n")


def test_editors_accept_an_upload_with_form_fields() -> None:
    _schema_check("    - name: up\n      files: {f: a.png}\n      form: {a: b}\n")
