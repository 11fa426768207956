"""The layout every kind follows, and the parts of the driver contract that need no platform.

(What drivers do on their platforms is the conformance suite's: tests/conformance/.)
"""

from __future__ import annotations

import ast
import inspect
import io
import shutil
from importlib import import_module
from pathlib import Path

import pytest

from deployer.config.loader import load_config
from deployer.console import ConsoleProgress
from deployer.errors import ConfigError
from deployer.events import Event
from deployer.secrets import Secrets, run_secrets
from deployer.targets import kinds
from deployer.targets.base import Renderer
from deployer.targets.contract import Driver, follow_by_polling
from tests.conftest import EXAMPLE, REPO

PACKAGE = REPO / "deployer" / "targets"
# Every method of the protocol: none is optional.
DRIVER_METHODS = sorted(
    name
    for name, member in vars(Driver).items()
    if inspect.isfunction(member) and not name.startswith("_")
)


@pytest.mark.parametrize("kind", kinds.KINDS)
def test_each_kind_is_a_package_with_a_schema_a_renderer_a_driver_and_templates(
    kind: str,
) -> None:
    folder = PACKAGE / kind
    # A driver may be split into modules of its own (kubernetes: cluster.py, forward.py...);
    # these three are what every kind has, and what the rest of deployer imports.
    assert {"__init__.py", "driver.py", "render.py", "schema.py"} <= {
        p.name for p in folder.glob("*.py")
    }
    assert (REPO / "templates" / kind).is_dir()
    renderer = kinds.renderer(kind)
    for name in vars(Renderer):
        if not name.startswith("_"):
            assert callable(getattr(renderer, name)), (kind, name)
    assert callable(kinds.driver(kind).connect)


@pytest.mark.parametrize("kind", kinds.KINDS)
def test_a_schema_module_imports_nothing_but_the_config_field_types(kind: str) -> None:
    """So that loading deploy.yaml loads no renderer, driver or SDK, and no import cycle can
    form between the config model and the kinds."""
    tree = ast.parse((PACKAGE / kind / "schema.py").read_text())
    imported = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert imported <= {"__future__", "typing", "pydantic", "deployer.config.fields"}, imported


def test_the_local_driver_implements_every_method_of_the_contract() -> None:
    from deployer.targets.local.driver import LocalDriver

    assert (
        sorted(
            [
                "apply",
                "close",
                "confirm",
                "follow",
                "live",
                "logs",
                "promote",
                "remove",
                "retire",
                "roll_back",
                "tidy",
                "wait",
            ]
        )
        == DRIVER_METHODS
    )
    for name in DRIVER_METHODS:
        own = inspect.signature(getattr(LocalDriver, name))
        declared = inspect.signature(getattr(Driver, name))
        assert list(own.parameters) == list(declared.parameters), name
    assert LocalDriver.replacement == "candidate"


def test_commands_on_a_deployment_by_name_need_no_model_files(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(repo / "model")
    (repo / "score.py").unlink()
    with pytest.raises(ConfigError, match="'model' does not exist"):
        load_config(repo / "deploy.yaml")
    config = load_config(repo / "deploy.yaml", check_files=False)
    assert config.targets["local"].ready_timeout_s == 120


def test_ready_deadlines_default_to_what_suits_each_platform(tmp_path: Path) -> None:
    config = load_config(EXAMPLE / "deploy.yaml")
    deadlines = {name: t.ready_timeout_s for name, t in config.targets.items()}
    assert deadlines == {
        "local": 120,
        "staging": 600,
        "production": 600,
        "batch": 900,
        "edge": 900,
    }
    text = (EXAMPLE / "deploy.yaml").read_text()
    edited = tmp_path / "deploy.yaml"
    shutil.copytree(EXAMPLE, tmp_path, dirs_exist_ok=True)
    edited.write_text(text.replace("port: 8080,", "port: 8080, ready_timeout_s: 0,"))
    with pytest.raises(ConfigError, match=r"targets\.local\.ready_timeout_s: must be greater"):
        load_config(edited)


def test_secrets_reach_subscribers_as_they_become_known() -> None:
    secrets = run_secrets(
        load_config(EXAMPLE / "deploy.yaml").registry,
        {"REGISTRY_PASSWORD": "registry-pass", "DEPLOYER_SCORING_KEY": "scoring-key"},
    )
    heard: list[str] = []
    secrets.subscribe(heard.append)
    secrets.add("a-token-learnt-later")
    secrets.add("a-token-learnt-later")
    secrets.add("ab")  # too short to mask
    assert heard == ["registry-pass", "scoring-key", "a-token-learnt-later"]


def test_the_console_masks_secrets_added_mid_run() -> None:
    secrets = Secrets(["registry-pass"])
    stream = io.StringIO()
    progress = ConsoleProgress(stream, tty=False, secrets=secrets)
    progress(Event("detail", "login with registry-pass"))
    secrets.add("key-from-the-platform")
    progress(Event("step", "key is key-from-the-platform"))
    assert stream.getvalue() == "    login with ***\n==> key is ***\n"


def test_following_by_polling_yields_each_new_line_once() -> None:
    pages = iter([["a", "b"], ["a", "b", "c"], ["b", "c", "d", "e"]])
    lines = follow_by_polling(lambda tail: next(pages), interval_s=0)
    assert [next(lines) for _ in range(5)] == ["a", "b", "c", "d", "e"]


def test_every_driver_module_is_loaded_by_name_only() -> None:
    """The config model and the renderers never import a driver: only the commands that act
    on deployments do (deployer.operate, deployer.deploy), through ``kinds.driver``, and a
    driver's own helper modules within its kind's package (never schema.py or render.py)."""
    importers = [
        path.relative_to(REPO)
        for path in (REPO / "deployer").rglob("*.py")
        if ".driver import" in path.read_text() or "import driver" in path.read_text()
    ]
    helpers = [
        p for p in importers if p.parent.parent == Path("deployer/targets") and p.name != "kinds.py"
    ]
    assert sorted(set(importers) - set(helpers)) == [Path("deployer/targets/kinds.py")], importers
    assert not [p for p in helpers if p.name in ("schema.py", "render.py")], helpers
    assert import_module("deployer.targets.kinds").driver("local").__name__.endswith("local.driver")


def test_a_driver_whose_sdk_is_missing_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys

    from deployer.errors import UserError

    for name in [m for m in sys.modules if m.startswith("deployer.targets.kubernetes.")]:
        if not name.endswith(".schema"):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "kubernetes", None)  # as if not installed
    with pytest.raises(UserError, match=r"pip install 'deployer\[kubernetes\]'"):
        kinds.driver("kubernetes")
