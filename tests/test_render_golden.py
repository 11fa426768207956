"""The example's rendered artifacts, compared with reviewed golden files.

Run ``UPDATE_GOLDEN=1 pytest tests/test_render_golden.py [-k TARGET]`` after an intended
change, and review the diff: the golden files are what users will read. The image tag (a
hash of every build input, the server code included) is written as IMAGE_TAG so that an
unrelated server change does not churn every golden file; determinism and tag stability
are tested on their own.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deployer.config.loader import load_config
from deployer.image import scoring_image
from deployer.plan import Plan, make_plan
from deployer.plan_inputs import PlanInputs
from tests.conftest import EXAMPLE

GOLDEN = Path(__file__).parent / "golden" / "example"
TARGETS = list(load_config(EXAMPLE / "deploy.yaml").targets)


def _generated_files(plan: Plan) -> dict[str, str]:
    """Every generated text file of a plan (copies of user files and server code are not)."""
    files: dict[str, str] = {}
    for target in plan.targets:
        for relative, content in target.artifacts.items():
            files[f"{target.name}/{relative}"] = content
        context = plan.images[target.image.repository]
        if context.repository != plan.config.name:  # a target's own image lives with it
            for dest, content in context.files.items():
                if isinstance(content, str):
                    files[f"{target.name}/image/{dest}"] = content
    return {path: text.replace(_tag(plan), "IMAGE_TAG") for path, text in files.items()}


def _tag(plan: Plan) -> str:
    return plan.targets[0].image.tag


def _compare(actual: dict[str, str], folder: Path) -> None:
    if os.environ.get("UPDATE_GOLDEN"):
        shutil.rmtree(folder, ignore_errors=True)
        for relative, text in actual.items():
            path = folder.parent / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        return
    expected = {
        str(path.relative_to(folder.parent)): path.read_text(encoding="utf-8")
        for path in folder.rglob("*")
        if path.is_file()
    }
    assert sorted(actual) == sorted(expected), "rendered files differ from the golden folder"
    for relative, text in actual.items():
        assert text == expected[relative], f"{relative} differs from its golden copy"


@pytest.mark.parametrize("target", TARGETS)
def test_target_artifacts_match_golden(target: str) -> None:
    plan = make_plan(load_config(EXAMPLE / "deploy.yaml"), EXAMPLE / "deploy.yaml", [target])
    _compare(_generated_files(plan), GOLDEN / target)


def test_scoring_image_matches_golden() -> None:
    inputs = PlanInputs.of(load_config(EXAMPLE / "deploy.yaml"), EXAMPLE / "deploy.yaml")
    context = scoring_image(inputs)
    files = {
        f"images/{dest}": text
        for dest, text in context.files.items()
        if isinstance(text, str) and not dest.startswith("deployer-server/")
    }
    _compare(files, GOLDEN / "images")
