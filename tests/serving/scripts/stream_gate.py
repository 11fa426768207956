"""A streamed answer that a test controls: run() returns an AMLResponse over a generator
that yields ``first``, then waits for a gate file, then yields ``second``.

The request body is the gate's path. A test reads ``first`` while the generator still
waits, which shows that the answer is sent as it is produced, with no timing involved.
A body ending in ``!raise`` makes the generator raise after the gate instead.
"""

import os
import time

from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse

GATE_CAP_S = 60.0  # a failing test cannot leave the worker waiting forever


def init():
    pass


def _chunks(gate: str, fail: bool):
    yield b"first\n"
    waited = time.monotonic()
    while not os.path.exists(gate) and time.monotonic() - waited < GATE_CAP_S:
        time.sleep(0.01)
    if fail:
        raise RuntimeError("the stream failed after its first chunk")
    yield b"second\n"


@rawhttp
def run(request: AMLRequest):
    body = request.get_data(as_text=True)
    gate, fail = body.removesuffix("!raise"), body.endswith("!raise")
    return AMLResponse(_chunks(gate, fail), 200, {"Content-Type": "text/plain"})
