"""``${NAME}``: how a rendered artifact names a secret it must not hold.

Renderers write ``placeholder(NAME)`` where a value comes from the environment variable
``NAME`` at deploy time (a registry password, a scoring key, a connection string); drivers
and ``simulate`` find them with ``PLACEHOLDER`` and fill them when they send the artifact,
never on disk.
"""

from __future__ import annotations

import re

PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def placeholder(env_name: str) -> str:
    """The placeholder of environment variable ``env_name``."""
    return f"${{{env_name}}}"
