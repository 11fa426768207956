"""Progress events: the library reports what it does; the CLI decides how to show it.

Keeping printing out of the library lets the same build or deploy drive a terminal
progress display, plain CI logs, or nothing at all (tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Level = Literal["step", "detail", "progress", "warning"]


@dataclass(frozen=True)
class Event:
    level: Level
    message: str
    # For "progress": an id (a layer, a file) whose line a terminal display updates in place.
    key: str = ""


Sink = Callable[[Event], None]


def discard(event: Event) -> None:
    """A sink for callers that want no progress."""
