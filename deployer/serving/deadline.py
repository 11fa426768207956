"""Enforce ``scoring_timeout_ms`` on the run() executing on the scoring thread.

run() runs on the worker's scoring thread (scoring.py), while the event loop runs on
another. A watchdog thread wakes every ``tick``; when the current run() is past its
deadline it does three things:

1. tells the loop, which answers the request at once: 500 ``Scoring timeout after N ms``,
   as azureml-inference-server-http does. The client gets its answer on time whatever
   run() does next;
2. raises :class:`ScoringTimeout` inside run() with ``PyThreadState_SetAsyncExc``. No
   signal handler is replaced, so a script's own SIGALRM handler keeps working. The
   exception lands at the next bytecode; to cut short a blocking call (``time.sleep``,
   a socket read), a real-time signal with a do-nothing handler interrupts it, if the
   script has not claimed that signal itself;
3. if run() still has not returned ``stuck_s`` later, it is in native code that neither
   can interrupt: the loop is told (worker.py logs it, answers what waits with 503 and
   exits so that the supervisor, or the container's restart policy, starts a fresh
   worker; gunicorn, which Azure ML runs on, kills such workers too).

The request path takes one uncontended lock twice per run(): the watchdog fires under
it, and a run() that ends under it can clear an exception raised too late to land in it.
"""

from __future__ import annotations

import ctypes
import logging
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

log = logging.getLogger("deployer.serving")
# Interrupts a blocking call in run(); real-time signals are rarely claimed by libraries.
WAKE_SIGNAL = signal.SIGRTMIN + 1 if hasattr(signal, "SIGRTMIN") else None
STUCK_S = 10.0  # after the timeout: past this, run() is stuck in native code


class ScoringTimeout(BaseException):
    """run() passed its deadline. A BaseException, so a script's ``except Exception``
    doesn't swallow it."""


def _raise_in(thread_id: int, exc: type[BaseException] | None) -> None:
    """Schedule ``exc`` in the thread (None cancels one scheduled and not yet raised)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(exc) if exc is not None else None
    )


def _wake(signum: int, frame: FrameType | None) -> None:
    """Does nothing: running it lets the pending ScoringTimeout land."""


class Deadline:
    def __init__(self, timeout_ms: int, stuck_s: float = STUCK_S):
        self.timeout_ms = timeout_ms
        self.timeout_s = timeout_ms / 1000
        self.stuck_s = stuck_s
        self.seq = 0  # id of the current (or last) run() call
        self.started = 0.0  # perf_counter() at its start; 0.0 when no run() is executing
        self.fired = -1  # seq of the last call the watchdog interrupted
        self._lock = threading.Lock()
        self._thread = 0  # the scoring thread
        self._wake_signal: int | None = None
        self._stop = threading.Event()
        # Checking 20 times per timeout keeps the overshoot within 5%, 10 ms to 1 s.
        self._tick = min(max(self.timeout_s / 20, 0.01), 1.0)

    @property
    def enabled(self) -> bool:
        return self.timeout_s > 0

    def start(
        self, on_timeout: Callable[[int], None], on_stuck: Callable[[int, float], None]
    ) -> None:
        """Watch run() calls made on this (the scoring) thread. ``on_timeout(seq)`` and
        ``on_stuck(seq, seconds)`` are called from the watchdog thread."""
        if not self.enabled:
            return
        self._thread = threading.get_ident()
        if WAKE_SIGNAL is not None and threading.current_thread() is threading.main_thread():
            if signal.getsignal(WAKE_SIGNAL) in (signal.SIG_DFL, None):
                signal.signal(WAKE_SIGNAL, _wake)
                self._wake_signal = WAKE_SIGNAL
            else:
                log.warning(
                    "the entry script handles signal %d: a blocking call in run() is not cut "
                    "short at the scoring timeout (Python code still is)",
                    WAKE_SIGNAL,
                )
        watchdog = threading.Thread(
            target=self._watch, args=(on_timeout, on_stuck), name="scoring-timeout", daemon=True
        )
        watchdog.start()

    def stop(self) -> None:
        self._stop.set()

    # The scoring thread, around each run() --------------------------------------------------
    def begin(self) -> int:
        with self._lock:
            self.seq = seq = self.seq + 1
            self.started = time.perf_counter()
        return seq

    def end(self, seq: int) -> bool:
        """run() has returned (or raised): True if it had timed out. Cancels a
        ScoringTimeout scheduled too late to land inside it."""
        with self._lock:
            self.started = 0.0
            if self.fired != seq:
                return False
            if self._thread:
                _raise_in(self._thread, None)
            return True

    # The watchdog --------------------------------------------------------------------------
    def _watch(
        self, on_timeout: Callable[[int], None], on_stuck: Callable[[int, float], None]
    ) -> None:
        perf_counter, timeout_s = time.perf_counter, self.timeout_s
        reported_stuck = -1
        while not self._stop.wait(self._tick):
            with self._lock:
                seq, started = self.seq, self.started
                if not started:
                    continue
                overdue = perf_counter() - started - timeout_s
                if overdue > 0 and self.fired != seq:
                    self.fired = seq
                    _raise_in(self._thread, ScoringTimeout)
                    if self._wake_signal is not None:
                        signal.pthread_kill(self._thread, self._wake_signal)
                    on_timeout(seq)
                elif overdue > self.stuck_s and reported_stuck != seq:
                    reported_stuck = seq
                    on_stuck(seq, overdue + timeout_s)
