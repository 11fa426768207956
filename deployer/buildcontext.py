"""An image's build context: generated files and source files, named by content.

The image tag is a hash of every byte that goes into the build, so unchanged inputs give the
same tag (and nothing to build or push) and any change gives a new one.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

TAG_LENGTH = 16
_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImageRef:
    registry: str
    repository: str
    tag: str

    def __str__(self) -> str:
        return f"{self.registry}/{self.repository}:{self.tag}"


@dataclass
class BuildContext:
    """Files of one image build: context path -> generated text or a source file."""

    repository: str
    files: dict[str, str | Path] = field(default_factory=dict)

    def add_text(self, dest: str, text: str) -> None:
        self.files[dest] = text

    def add_file(self, dest: str, source: Path) -> None:
        self.files[dest] = source

    def add_tree(
        self, dest: str, source: Path, exclude: tuple[str, ...] = ("__pycache__",)
    ) -> None:
        """Add ``source`` (a file or a folder, recursively) under ``dest``."""
        if source.is_file():
            self.add_file(dest, source)
            return
        for path in sorted(source.rglob("*")):
            if path.is_file() and not any(part in exclude for part in path.parts):
                self.add_file(f"{dest}/{path.relative_to(source).as_posix()}", path)

    def digest(self) -> str:
        """sha256 over every path, mode and content, in path order."""
        h = hashlib.sha256()
        for dest, content in sorted(self.files.items()):
            h.update(dest.encode() + b"\0")
            if isinstance(content, str):
                h.update(b"t\0" + content.encode())
            else:
                h.update(b"x\0" if os.access(content, os.X_OK) else b"f\0")
                for chunk in _read_chunks(content):
                    h.update(chunk)
            h.update(b"\0")
        return h.hexdigest()

    def tag(self) -> str:
        return self.digest()[:TAG_LENGTH]

    def write_to(self, folder: Path) -> None:
        """Materialise the context. Source files are copied, never linked: editing the
        rendered copy must not change the user's repository."""
        for dest, content in sorted(self.files.items()):
            target = folder / dest
            target.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(content, str):
                target.write_text(content, encoding="utf-8")
                continue
            shutil.copyfile(content, target)
            shutil.copymode(content, target)


def _read_chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            yield chunk


def hash_tree(path: Path) -> str:
    """Content hash of a file or folder (paths and bytes), for ``model.version: auto``."""
    context = BuildContext("model")
    context.add_tree("model", path)
    return context.digest()
