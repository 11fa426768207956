"""init() waits until a file exists, so a test controls when readiness flips."""

import os
import time


def init():
    gate = os.environ["SLOW_INIT_GATE"]
    deadline = time.monotonic() + 60
    while not os.path.exists(gate) and time.monotonic() < deadline:
        time.sleep(0.05)


def run(data):
    return {"ready": True}
