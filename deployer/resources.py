"""Where the templates and the published schema are, installed or in a checkout.

A wheel carries them inside the package (pyproject's force-include); a source checkout or
an editable install finds them at the top of the repository.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _find(name: str) -> Path:
    for candidate in (_PACKAGE / name, _PACKAGE.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"deployer's {name}/ folder is missing from the installation")


@cache
def templates_dir() -> Path:
    return _find("templates")


@cache
def schemas_dir() -> Path:
    return _find("schemas")


def serving_package_dir() -> Path:
    """The scoring server's source, copied into every scoring image."""
    return _PACKAGE / "serving"
