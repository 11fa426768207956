"""Prometheus metrics shared by all worker processes, without locks.

Counters live in one shared memory block with a row per worker: a worker only ever
writes its own row (so no lock or atomic is needed), and ``GET /metrics`` - answered
by whichever worker gets the scrape - sums the rows. Updating a counter is one
``memoryview`` item increment, cheap enough for the request path. Values are float64:
exact for counts below 2**53.

With ``--workers N`` the supervisor restarts a worker that dies (supervisor.py); the new
one takes over the dead one's row, so the counters carry on from where it left them.
Before it starts, the supervisor settles the row with :func:`worker_replaced` (nobody
writes the row then): the dead worker's requests in flight will never be answered, and
the restart is counted. ``deployer_workers`` reports the configured worker count: a
worker being restarted still counts (``deployer_worker_restarts_total`` shows restarts).
"""

from __future__ import annotations

import math
import mmap
import os
from bisect import bisect_left

PATHS = ("/score", "/", "/ready", "/metrics", "/swagger.json", "other")
CODES = (200, 400, 404, 405, 408, 413, 415, 431, 500, 503)  # anything else counts as "other"
BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

PATH_INDEX = {path: i for i, path in enumerate(PATHS)}
_NCODES = len(CODES) + 1
CODE_INDEX = {code: i for i, code in enumerate(CODES)}
# Row layout: requests[path][code] | histogram buckets (+Inf last) | sum | count | in flight
# | restarts (of this row's worker: written by the supervisor only, between two workers)
# | idle (1.0 while the worker is ready, accepting and has nothing to score) | handoffs
# | connections (open, while ready and accepting; +inf otherwise)
_HIST = len(PATHS) * _NCODES
_SUM = _HIST + len(BUCKETS) + 1
_COUNT = _SUM + 1
_INFLIGHT = _COUNT + 1
_RESTARTS = _INFLIGHT + 1
_IDLE = _RESTARTS + 1
_HANDOFFS = _IDLE + 1
_CONNECTIONS = _HANDOFFS + 1
ROW = _CONNECTIONS + 1
_ITEM = 8  # bytes per float64


def shared_block(workers: int) -> tuple[mmap.mmap, int]:
    """A zeroed block for ``workers`` rows and a file descriptor children can map."""
    fd = os.memfd_create("deployer-metrics") if hasattr(os, "memfd_create") else _tmpfile()
    os.ftruncate(fd, workers * ROW * _ITEM)
    return mmap.mmap(fd, workers * ROW * _ITEM), fd


def _tmpfile() -> int:
    import tempfile

    fd, path = tempfile.mkstemp(prefix="deployer-metrics-")
    os.unlink(path)
    return fd


def attach(fd: int, workers: int) -> mmap.mmap:
    return mmap.mmap(fd, workers * ROW * _ITEM)


def worker_replaced(block: mmap.mmap, index: int) -> None:
    """Settle row ``index`` after its worker died, before the next one starts: none of
    its requests in flight will be answered; count the restart."""
    with memoryview(block) as raw, raw.cast("d") as values:
        base = index * ROW
        values[base + _INFLIGHT] = 0.0
        values[base + _IDLE] = 0.0  # peers must not hand work to the dead one
        values[base + _CONNECTIONS] = math.inf  # ... nor leave connections to it
        values[base + _RESTARTS] += 1


class Metrics:
    def __init__(self, block: mmap.mmap | None = None, workers: int = 1, index: int = 0):
        self._block = block if block is not None else mmap.mmap(-1, ROW * _ITEM)
        self._all = memoryview(self._block).cast("d")
        self.workers = workers
        self.index = index
        base = index * ROW
        self._row = self._all[base : base + ROW]
        # The request path uses these directly: see App._score.
        self.values = self._row
        self.inflight = _INFLIGHT

    def observe(self, path: str, status: int, seconds: float) -> None:
        row = self._row
        path_slot = PATH_INDEX.get(path, len(PATHS) - 1)
        row[path_slot * _NCODES + CODE_INDEX.get(status, _NCODES - 1)] += 1
        if path == "/score":
            row[_HIST + bisect_left(BUCKETS, seconds)] += 1
            row[_SUM] += seconds
            row[_COUNT] += 1

    def publish(self, idle: bool, connections: float) -> None:
        """This worker's state, for its peers (see the module docstring)."""
        row = self._row
        row[_IDLE] = 1.0 if idle else 0.0
        row[_CONNECTIONS] = connections

    def fewest_connections_elsewhere(self) -> float:
        """The fewest connections another worker taking connections holds (+inf: none)."""
        values, workers, me = self._all, self.workers, self.index
        return min(
            (values[w * ROW + _CONNECTIONS] for w in range(workers) if w != me), default=math.inf
        )

    def handed_off(self) -> None:
        self._row[_HANDOFFS] += 1

    def idle_peer(self) -> int | None:
        """The index of another worker that is idle now, if any (nearest after us first,
        so that workers don't all pick the same one)."""
        values, workers, me = self._all, self.workers, self.index
        for step in range(1, workers):
            peer = (me + step) % workers
            if values[peer * ROW + _IDLE] == 1.0:
                return peer
        return None

    def render(self) -> bytes:
        """The text exposition format (version 0.0.4), summed over workers."""
        total = [0.0] * ROW
        values = self._all
        for w in range(self.workers):
            base = w * ROW
            for i in range(ROW):
                total[i] += values[base + i]
        out = [
            "# HELP deployer_http_requests_total HTTP requests answered, by path and status code.",
            "# TYPE deployer_http_requests_total counter",
        ]
        labels = [str(code) for code in CODES] + ["other"]
        for p, path in enumerate(PATHS):
            for c, code in enumerate(labels):
                value = total[p * _NCODES + c]
                if value or (path == "/score" and code == "200"):
                    out.append(
                        f'deployer_http_requests_total{{path="{path}",code="{code}"}} {value:.0f}'
                    )
        out += [
            "# HELP deployer_score_duration_seconds Time to answer /score requests, from their "
            "first byte to the last byte of the answer written.",
            "# TYPE deployer_score_duration_seconds histogram",
        ]
        cumulative = 0.0
        for b, bound in enumerate((*BUCKETS, float("inf"))):
            cumulative += total[_HIST + b]
            le = "+Inf" if bound == float("inf") else repr(bound)
            out.append(f'deployer_score_duration_seconds_bucket{{le="{le}"}} {cumulative:.0f}')
        out += [
            f"deployer_score_duration_seconds_sum {total[_SUM]!r}",
            f"deployer_score_duration_seconds_count {total[_COUNT]:.0f}",
            "# HELP deployer_requests_in_flight Requests being received or answered now "
            "(this scrape included).",
            "# TYPE deployer_requests_in_flight gauge",
            f"deployer_requests_in_flight {total[_INFLIGHT]:.0f}",
            "# HELP deployer_workers_idle Workers ready with nothing to score.",
            "# TYPE deployer_workers_idle gauge",
            f"deployer_workers_idle {total[_IDLE]:.0f}",
            "# HELP deployer_handoffs_total Connections a busy worker handed to an idle one.",
            "# TYPE deployer_handoffs_total counter",
            f"deployer_handoffs_total {total[_HANDOFFS]:.0f}",
            "# HELP deployer_workers Worker processes configured (--workers); one being "
            "restarted still counts.",
            "# TYPE deployer_workers gauge",
            f"deployer_workers {self.workers}",
            "# HELP deployer_worker_restarts_total Workers restarted after they died.",
            "# TYPE deployer_worker_restarts_total counter",
            f"deployer_worker_restarts_total {total[_RESTARTS]:.0f}",
        ]
        return ("\n".join(out) + "\n").encode()
