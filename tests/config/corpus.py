"""The corpus of invalid deploy.yaml files: each case, and what validating it must print.

A case is ``tests/config/invalid/<name>.yaml``, a small variation of the valid
``invalid/files/deploy.yaml``. Its leading comment says what it breaks, and each
``# expect: `` line is one line ``deployer validate`` must print, in order::

    # Unknown key with a close match.
    # expect: deploy.yaml:4:1: entry_scrip: unknown key 'entry_scrip'; did you mean 'entry_script'?

The line numbers count the comment lines too: they are positions in the file as it is.
A case runs as ``deploy.yaml`` in a folder holding everything in ``invalid/files/``;
a file there named ``X.broken`` is installed as ``X`` (a Python file that must not parse
would fail the repository's lint).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

INVALID = Path(__file__).resolve().parent / "invalid"
FILES = INVALID / "files"
EXPECT = "# expect: "


@dataclass(frozen=True)
class Case:
    path: Path

    @property
    def name(self) -> str:
        return self.path.stem

    @property
    def expected_lines(self) -> list[str]:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [line.removeprefix(EXPECT) for line in lines if line.startswith(EXPECT)]

    @property
    def expected_stderr(self) -> str:
        """Every problem, then the count the CLI closes with."""
        count = len(self.expected_lines)
        summary = f"{count} problem{'s' if count > 1 else ''} found"
        return "".join(f"{line}\n" for line in [*self.expected_lines, summary])

    def install(self, folder: Path) -> Path:
        """Lay the case out in ``folder`` as deploy.yaml beside the files it references."""
        shutil.copytree(FILES, folder, dirs_exist_ok=True)
        for broken in folder.glob("*.broken"):
            broken.rename(broken.with_suffix(""))
        config = folder / "deploy.yaml"
        shutil.copyfile(self.path, config)
        return config


def cases() -> list[Case]:
    return [Case(path) for path in sorted(INVALID.glob("*.yaml"))]
