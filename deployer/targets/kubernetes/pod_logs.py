"""Pod logs through the API (``pods/NAME/log``), as ``kubectl logs`` reads them: the last
lines of one pod (its crashed container's with ``previous``), several pods merged by the
API's timestamps, and several pods followed at once."""

from __future__ import annotations

import queue
import re
import threading
from collections.abc import Iterator
from typing import Any

import urllib3
from kubernetes.client.exceptions import ApiException

from deployer.targets.kubernetes.cluster import Cluster
from deployer.targets.kubernetes.objects import path

READ_TIMEOUT_S = 30
_TIMESTAMP = re.compile(r"^(\d{4}-\d\d-\d\dT[0-9:.]+Z) ")
_READ_ERRORS = (ApiException, urllib3.exceptions.HTTPError, OSError)


def read(
    cluster: Cluster,
    namespace: str,
    pod: str,
    tail: int,
    *,
    previous: bool = False,
    timestamps: bool = False,
) -> list[str]:
    """The last ``tail`` lines of one pod ([] when it has none to give yet): with
    ``previous``, its last terminated container's, or the current one's if none ended."""
    query = {"tailLines": str(tail)}
    if previous:
        query["previous"] = "true"
    if timestamps:
        query["timestamps"] = "true"
    try:
        response = cluster.stream(path("Pod", namespace, pod) + "/log", query, READ_TIMEOUT_S)
        text = str(response.read().decode("utf-8", "replace"))
        response.release_conn()
    except _READ_ERRORS:
        if previous:
            return read(cluster, namespace, pod, tail, timestamps=timestamps)
        return []
    return list(text.splitlines())


def merged(cluster: Cluster, namespace: str, pods: list[str], tail: int) -> list[str]:
    """The last ``tail`` lines of all ``pods``, in the order the API's timestamps give,
    each prefixed ``[pod]`` when there are several (``kubectl logs -l ... --prefix``)."""
    stamped: list[tuple[str, int, str]] = []
    for pod in pods:
        prefix = f"[{pod}] " if len(pods) > 1 else ""
        for raw in read(cluster, namespace, pod, tail, timestamps=True):
            found = _TIMESTAMP.match(raw)
            stamp, line = (found[1], raw[found.end() :]) if found else ("", raw)
            stamped.append((stamp, len(stamped), prefix + line))
    return [line for _, _, line in sorted(stamped)][-tail:] if tail else []


def follow(cluster: Cluster, namespace: str, pods: list[str], tail: int) -> Iterator[str]:
    """Every pod's lines as they come, merged, until all streams end or the caller stops."""
    lines: queue.Queue[str | None] = queue.Queue()
    stop = threading.Event()

    def stream(pod: str, prefix: str) -> None:
        query = {"follow": "true", "tailLines": str(tail)}
        try:
            response: Any = cluster.stream(path("Pod", namespace, pod) + "/log", query)
            for raw in response:
                if stop.is_set():
                    break
                lines.put(prefix + raw.decode("utf-8", "replace").rstrip("\n"))
            response.release_conn()
        except _READ_ERRORS:
            pass
        lines.put(None)

    for pod in pods:
        prefix = f"[{pod}] " if len(pods) > 1 else ""
        threading.Thread(target=stream, args=(pod, prefix), daemon=True).start()
    open_streams = len(pods)
    try:
        while open_streams:
            line = lines.get()
            if line is None:
                open_streams -= 1
            else:
                yield line
    finally:
        stop.set()
