"""Enforce ``scoring_timeout_ms`` on a run() that executes on the event-loop thread.

run() is called inline on the main thread (see app.py for why), so nothing on the
loop can interrupt it. A watchdog thread wakes every ``tick`` and, when the current
run() is past its deadline, sends SIGALRM to the main thread; the handler raises
:class:`ScoringTimeout` inside run(). That interrupts Python code and blocking calls
like ``time.sleep`` (as Azure ML's own SIGALRM timer does); native code that never
returns to Python can't be interrupted by any in-process means.

Azure ML arms ``setitimer`` and swaps the SIGALRM handler around every call (four
system calls per request). Here the request path only writes two attributes
(``seq``, ``started``); the watchdog's polling costs one wake-up per tick.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from types import FrameType


class ScoringTimeout(BaseException):
    """run() passed its deadline. A BaseException, so a script's ``except Exception``
    doesn't swallow it."""


class Deadline:
    def __init__(self, timeout_ms: int):
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000
        self.seq = 0  # id of the current (or last) run() call
        self.started = 0.0  # perf_counter() at its start; 0.0 when no run() is executing
        self.fired = -1  # seq of the last call the watchdog interrupted
        self._main = threading.main_thread().ident
        self._stop = threading.Event()
        # Checking 20 times per timeout keeps the overshoot within 5%, 10 ms to 1 s.
        self._tick = min(max(self.timeout_s / 20, 0.01), 1.0)

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def start(self) -> None:
        """Install the handler (main thread only) and start the watchdog."""
        if not self.enabled:
            return
        if not hasattr(signal, "pthread_kill"):  # Windows: no SIGALRM to interrupt with
            logging.getLogger("deployer.serving").warning(
                "scoring timeouts are not enforced on this platform"
            )
            self.timeout_s = 0.0
            return
        signal.signal(signal.SIGALRM, self._on_alarm)
        threading.Thread(target=self._watch, name="scoring-timeout", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        perf_counter, timeout_s, main = time.perf_counter, self.timeout_s, self._main
        while not self._stop.wait(self._tick):
            # Read seq before started: the request path writes them in the other order,
            # so a stale pair can only look younger than it is, never older.
            seq = self.seq
            started = self.started
            if started and seq != self.fired and perf_counter() - started > timeout_s:
                self.fired = seq
                if main is not None:
                    signal.pthread_kill(main, signal.SIGALRM)

    def _on_alarm(self, signum: int, frame: FrameType | None) -> None:
        # Raise only inside the run() the watchdog meant: the signal may be handled late.
        if self.started and self.fired == self.seq:
            raise ScoringTimeout
