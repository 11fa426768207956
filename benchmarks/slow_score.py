"""Entry script for bench_server.py's ``slow`` scenario: run() takes 50 ms and uses no CPU.

It stands for a model whose run() waits (a GPU, a remote call, a big model in C code that
releases the GIL): a worker can do at most 20 run() a second, so a server with two
workers at most 40, and what matters is whether the server still answers its probes
while every worker is inside run().
"""

import time

RUN_S = 0.05  # bench_server.py's SLOW_RUN_S


def init():
    """Nothing to load."""


def run(raw_data):
    """Sleep 50 ms, whatever the input; return a small JSON object."""
    time.sleep(RUN_S)
    return {"slept_ms": 50}
