"""An image's files without Docker: the rendered Dockerfile's COPY, ``RUN mkdir -p`` and
ENV instructions applied to a folder that stands for the image's root.

Tests serve what an image would hold, laid out by the same build context and Dockerfile
the image is built from, so the layout is never restated by hand.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from deployer.buildcontext import BuildContext

# The variables whose values are paths in the image, and so move under the root here.
PATH_VARIABLES = ("AML_APP_ROOT", "AZUREML_ENTRY_SCRIPT", "AZUREML_MODEL_DIR")


@dataclass
class ImageFiles:
    root: Path  # stands for / in the image
    env: dict[str, str] = field(default_factory=dict)  # the Dockerfile's ENV, as written

    def path(self, in_image: str) -> Path:
        return self.root / in_image.lstrip("/")

    def serving_env(self) -> dict[str, str]:
        """The image's path variables, pointing under ``root``."""
        return {name: str(self.path(self.env[name])) for name in PATH_VARIABLES}


def lay_out(context: BuildContext, folder: Path) -> ImageFiles:
    """Write ``context`` under ``folder``/context and lay the image out under ``folder``/image.

    Only COPY (of the build context), ``RUN mkdir -p`` and ENV are carried out; a COPY
    whose source is not in the context fails, as ``docker build`` does.
    """
    source = folder / "context"
    context.write_to(source)
    image = ImageFiles(folder / "image")
    for words in _instructions((source / "Dockerfile").read_text()):
        if words[0] == "COPY":
            _copy(source / words[1], words[2], image)
        elif words[:3] == ["RUN", "mkdir", "-p"]:
            for path in words[3:]:
                image.path(path).mkdir(parents=True, exist_ok=True)
        elif words[0] == "ENV":
            for assignment in words[1:]:
                name, _, value = assignment.partition("=")
                image.env[name] = value
    return image


def _instructions(dockerfile: str) -> Iterator[list[str]]:
    """Each instruction's words, continuation lines joined, comments left out."""
    pending = ""
    for line in dockerfile.splitlines():
        if line.lstrip().startswith("#") or not line.strip():
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        instruction, pending = pending + line, ""
        if instruction.split(None, 1)[0] in ("COPY", "RUN", "ENV"):
            yield shlex.split(instruction)


def _copy(source: Path, dest: str, image: ImageFiles) -> None:
    if source.is_dir():
        shutil.copytree(source, image.path(dest), dirs_exist_ok=True)
    elif source.is_file():
        target = image.path(dest) / source.name if dest.endswith("/") else image.path(dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    else:
        raise FileNotFoundError(f"COPY failed: {source.name!r} is not in the build context")
