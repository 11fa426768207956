"""How the CLI shows progress events: a live status line on a terminal, plain lines in CI.

Part of the CLI layer: the library only emits ``Event``s.
"""

from __future__ import annotations

import re
import shutil
import sys
from typing import TYPE_CHECKING, TextIO

from deployer.events import Event

if TYPE_CHECKING:
    from deployer.secrets import Secrets

# Docker's push/pull progress bars ("[====>   ] 12MB/40MB"): worth a live line, not a log.
_PROGRESS_BAR = re.compile(r"\[[=> ]+\]")


class ConsoleProgress:
    def __init__(
        self, stream: TextIO | None = None, tty: bool | None = None, secrets: Secrets | None = None
    ) -> None:
        # Looked up now, not at import: tests and callers may have replaced sys.stderr.
        stream = sys.stderr if stream is None else stream
        self._stream = stream
        self._tty = stream.isatty() if tty is None else tty
        self._status_shown = False
        self._last: dict[str, str] = {}
        # The run's secrets, read at each event: a driver may add one (a key) mid-run, and a
        # container's log or an error may echo any of them.
        self._secrets = secrets

    def __call__(self, event: Event) -> None:
        if self._secrets is not None and self._secrets.values:
            text = self._secrets.masker().text(event.message)
            event = Event(event.level, text, event.key)
        if self._tty:
            self._live(event)
        else:
            self._plain(event)

    def _live(self, event: Event) -> None:
        if event.level in ("step", "warning"):
            self._clear()
            prefix = "==> " if event.level == "step" else "warning: "
            self._stream.write(prefix + event.message + "\n")
        else:
            width = shutil.get_terminal_size((100, 20)).columns - 1
            self._stream.write("\r\x1b[2K" + event.message.strip()[:width])
            self._status_shown = True
        self._stream.flush()

    def _plain(self, event: Event) -> None:
        if event.level == "progress":
            if _PROGRESS_BAR.search(event.message) or self._last.get(event.key) == event.message:
                return  # CI logs want each state once, not every byte count
            self._last[event.key] = event.message
        prefix = {"step": "==> ", "warning": "warning: "}.get(event.level, "    ")
        self._stream.write(prefix + event.message + "\n")
        self._stream.flush()

    def _clear(self) -> None:
        if self._status_shown:
            self._stream.write("\r\x1b[2K")
            self._status_shown = False

    def close(self) -> None:
        self._clear()
        self._stream.flush()
