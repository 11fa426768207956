"""Write a plan to a folder: ``images/<repository>/`` build contexts and ``<target>/`` artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

from deployer.errors import UserError
from deployer.plan import Plan

MARKER = ".deployer-render"


def write_plan(plan: Plan, out_dir: Path) -> list[Path]:
    """Write every artifact; return the files written, sorted.

    The folder is emptied first so nothing stale survives a render, which is why a
    non-empty folder that a render did not make is refused rather than cleaned.
    """
    _prepare(out_dir)
    written: list[Path] = []
    for repository, context in sorted(plan.images.items()):
        folder = out_dir / "images" / repository
        context.write_to(folder)
        written += [folder / dest for dest in context.files]
    for target in plan.targets:
        for relative, content in sorted(target.artifacts.items()):
            path = out_dir / target.name / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            written.append(path)
    return sorted(written)


def _prepare(out_dir: Path) -> None:
    if out_dir.exists():
        if not out_dir.is_dir():
            raise UserError(f"{out_dir}: exists and is not a folder")
        entries = list(out_dir.iterdir())
        if entries and not (out_dir / MARKER).exists():
            raise UserError(
                f"{out_dir}: folder is not empty and was not made by 'deployer render'; "
                "choose another --out folder"
            )
        for entry in entries:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("made by 'deployer render'; emptied by the next render\n")
