"""Rendering as a whole: determinism, the output folder's safety, no secrets."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from deployer.cli import main
from deployer.config.loader import load_config
from deployer.errors import UserError
from deployer.plan import make_plan
from deployer.render import write_plan
from tests.conftest import EXAMPLE


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def test_rendering_twice_gives_byte_identical_trees(tmp_path: Path) -> None:
    config = EXAMPLE / "deploy.yaml"
    assert main(["render", "-c", str(config), "-o", str(tmp_path / "a")]) == 0
    assert main(["render", "-c", str(config), "-o", str(tmp_path / "b")]) == 0
    first, second = _tree_digest(tmp_path / "a"), _tree_digest(tmp_path / "b")
    assert first == second
    assert any(name.endswith("Dockerfile") for name in first)


def test_every_target_gets_a_folder_and_the_image_a_build_context(tmp_path: Path) -> None:
    config = load_config(EXAMPLE / "deploy.yaml")
    plan = make_plan(config, EXAMPLE / "deploy.yaml")
    write_plan(plan, tmp_path)
    for name in config.targets:
        assert any((tmp_path / name).iterdir()), name
    image = tmp_path / "images" / config.name
    assert (image / "Dockerfile").is_file()
    assert (image / "model" / "model" / "diabetes.onnx").read_bytes() == (
        EXAMPLE / "model" / "diabetes.onnx"
    ).read_bytes()
    assert (image / "deployer-server" / "deployer" / "serving" / "__main__.py").is_file()


def test_image_tag_follows_every_build_input(example_copy: Callable[..., Path]) -> None:
    config_path = example_copy()
    tag = make_plan(load_config(config_path), config_path, ["local"]).targets[0].image.tag
    assert tag == make_plan(load_config(config_path), config_path, ["local"]).targets[0].image.tag
    (config_path.parent / "model" / "diabetes.onnx").write_bytes(b"another model")
    changed = make_plan(load_config(config_path), config_path, ["local"]).targets[0].image.tag
    assert changed != tag


def test_render_refuses_a_folder_it_did_not_make(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    plan = make_plan(load_config(EXAMPLE / "deploy.yaml"), EXAMPLE / "deploy.yaml", ["local"])
    with pytest.raises(UserError, match="not made by 'deployer render'"):
        write_plan(plan, tmp_path)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_rerender_removes_stale_files(tmp_path: Path) -> None:
    config = EXAMPLE / "deploy.yaml"
    out = tmp_path / "out"
    assert main(["render", "-c", str(config), "-o", str(out)]) == 0
    assert main(["render", "-c", str(config), "-t", "local", "-o", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == [
        "images",
        "local",
    ]


def test_unknown_target_is_a_user_error(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code = main(["render", "-c", str(EXAMPLE / "deploy.yaml"), "-t", "lcoal", "-o", str(tmp_path)])
    assert code == 2
    assert (
        "no target named 'lcoal' in deploy.yaml; did you mean 'local'?" in capsys.readouterr().err
    )


def test_no_secret_reaches_a_rendered_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "s3cr3t-Value-that-must-not-leak"
    monkeypatch.setenv("REGISTRY_USERNAME", "ci-user-" + secret)
    monkeypatch.setenv("REGISTRY_PASSWORD", secret)
    monkeypatch.setenv("TriggerConnectionString", "DefaultEndpointsProtocol=https;" + secret)
    assert main(["render", "-c", str(EXAMPLE / "deploy.yaml"), "-o", str(tmp_path)]) == 0
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path
