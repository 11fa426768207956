"""How the commands print results: test runs and what is live."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from deployer.operate import TargetStatus
    from deployer.secrets import Masker
    from deployer.verify import TestRun


def print_tests(run: TestRun, masker: Masker | None = None) -> None:
    def show(line: str) -> None:
        print(masker.text(line) if masker is not None else line)

    show(f"tests against {run.uri}: {'passed' if run.passed else 'FAILED'}")
    if run.error:
        show(f"  {run.error}")
    for r in run.results:
        verdict = "pass" if r.passed else "FAIL"
        if r.status is None:
            timing = "not sent"
        elif r.ttfb_ms is None:
            timing = f"{r.latency_ms:8.1f} ms"
        else:
            # The time to the status line and headers, then to the body's last byte.
            size = "" if r.received_bytes is None else f"  {_size(r.received_bytes)}"
            timing = f"first byte {r.ttfb_ms:8.1f} ms  total {r.latency_ms:8.1f} ms{size}"
        show(f"  {verdict:<4}  {r.name:<24} {r.method:<7} {r.status or '-'!s:>3}  {timing}")
        # Each failed expectation on its own line: expected, then what came.
        for failure in r.failures or ([r.detail] if r.detail else []):
            show(f"          {failure}")
    if run.latency:
        lat = run.latency
        limit = (
            f" (limit {lat.limit_p95_ms:g} ms: {'ok' if lat.passed else 'EXCEEDED'})"
            if lat.limit_p95_ms is not None
            else ""
        )
        show(
            f"  latency over {lat.requests} requests: p50 {lat.p50_ms:.1f} ms, "
            f"p95 {lat.p95_ms:.1f} ms{limit}, p99 {lat.p99_ms:.1f} ms"
        )


def print_status(found: list[TargetStatus], masker: Masker) -> None:
    """One block per target: what is live, or why it cannot be said."""
    for status in found:
        head = f"{status.name} ({status.kind})"
        if status.error:
            print(masker.text(f"{head}: unknown: {status.error}"))
            continue
        live = status.live
        if live is None:
            print(f"{head}: nothing deployed")
            continue
        detail = f" ({live.detail})" if live.detail else ""
        print(masker.text(f"{head}: {live.health}{detail}"))
        print(masker.text(f"  revision     {live.revision}"))
        print(masker.text(f"  image        {live.image}"))
        if live.endpoint is not None:
            print(masker.text(f"  scoring URI  {live.endpoint.scoring_uri}"))
            if live.endpoint.headers:
                # The names only: the values are secrets (a scoring key).
                names = ", ".join(sorted(live.endpoint.headers))
                print(f"  send headers {names}")
        if live.ref:
            print(masker.text(f"  resource     {live.ref}"))


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} B"
    if count < 1024 * 1024:
        return f"{count / 1024:.1f} KiB"
    return f"{count / 1024 / 1024:.1f} MiB"
