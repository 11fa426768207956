"""run() that a test controls through files: it can block until a gate file exists.

The request body is a JSON object; every key is optional:

* ``started``: a path; run() writes its pid there first, so a test knows that run() is
  executing, and in which worker (written to a temporary name and renamed, so the file
  never appears half written).
* ``gate``: a path; run() polls every 10 ms until it exists (for at most 60 s, a safety
  cap so that a failing test cannot leave a worker blocked forever).
* ``sleep``: seconds to ``time.sleep`` (Python code: a scoring timeout interrupts it).
* ``native_sleep``: whole seconds to spend in native code that no signal interrupts:
  libc ``sleep()`` called through ctypes with every signal blocked in this thread, as a
  model's long C computation would be. (Without the mask, a signal handler would cut
  ``sleep()`` short with EINTR and Python would raise inside run() at once.)
* ``done``: a path; run() writes its pid there once the native sleep has returned
  (before the signals are unblocked, so before any pending timeout is raised).

The answer is ``{"pid": <this worker's pid>, "opened": <the gate opened, or no gate>}``.
"""

import ctypes
import json
import os
import signal
import time
from typing import Any

GATE_POLL_S = 0.01
GATE_CAP_S = 60.0


def init() -> None:
    pass


def _write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as file:
        file.write(text)
    os.replace(tmp, path)


def run(data: str) -> dict[str, Any]:
    request = json.loads(data) if data else {}
    pid = os.getpid()
    if request.get("started"):
        _write(request["started"], str(pid))
    opened = True
    if request.get("gate"):
        deadline = time.monotonic() + GATE_CAP_S
        while not os.path.exists(request["gate"]):
            if time.monotonic() > deadline:
                opened = False
                break
            time.sleep(GATE_POLL_S)
    if request.get("sleep"):
        time.sleep(float(request["sleep"]))
    if request.get("native_sleep"):
        everything = signal.valid_signals()
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, everything)
        try:
            ctypes.CDLL(None).sleep(int(request["native_sleep"]))
            if request.get("done"):
                _write(request["done"], str(pid))
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
    return {"pid": pid, "opened": opened}
