"""The aci deploy's steps, timed against the Azure test double (tests/doubles/azure).

Per round, on a fresh copy of the example with its own service name:
  first deploy   `deployer deploy -t bench` onto nothing (candidate group, tests, service
                 group, confirm)
  update         the same with a new version, while a client probes GET /ready every 20 ms:
                 the longest time the service did not answer is ACI's update downtime (the
                 group restarts to change its image)
Then `deployer down`. Each step's time is when its progress line appeared, read from the
deploy's output as it runs. Prints medians over the rounds.

The double runs real containers on the local Docker engine, so the figures are this
machine's container start-up, not Azure's (where creating a group takes tens of seconds
to minutes, and pulling the image dominates): they show where a deploy's time goes and
the shape of the downtime, not what Azure will take.

    eval "$(scripts/dev-env)"; .venv/bin/python benchmarks/bench_aci.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.conformance.harness import ModelRepo  # noqa: E402
from tests.conformance.platforms import aci_platform  # noqa: E402

# Progress lines that open each step, in the order a deploy prints them.
MARKS = {
    "candidate": "creating the candidate group",
    "tests": "testing the new version at",
    "promote": "updating ",
    "create-service": "creating the service group",
    "service tests": "the new version serves; testing",
}
DEV_ENV_NAMES = ("REGISTRY_USERNAME", "REGISTRY_PASSWORD", "DEPLOYER_TEST_REGISTRY", "DOCKER_HOST")


class Outage:
    """Probes ``url`` every 20 ms; the longest stretch without a 200 is the outage."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.longest = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Outage:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        down_since: float | None = None
        while not self._stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=1) as response:
                    ok = response.status == 200
            except (urllib.error.URLError, OSError):
                ok = False
            now = time.monotonic()
            if ok and down_since is not None:
                self.longest = max(self.longest, now - down_since)
                down_since = None
            elif not ok and down_since is None:
                down_since = now
            time.sleep(0.02)


def timed_deploy(repo: ModelRepo) -> dict[str, float]:
    """Run a deploy; seconds from its start to each step's first progress line, and in all."""
    started = time.monotonic()
    proc = repo.start_deploy()
    seen: dict[str, float] = {}
    assert proc.stdout is not None
    for line in proc.stdout:
        for step, mark in MARKS.items():
            if mark in line and step not in seen:
                seen[step] = time.monotonic() - started
    code = proc.wait()
    seen["total"] = time.monotonic() - started
    if code != 0:
        raise SystemExit(f"deploy failed ({code}): see {repo.reports}")
    return seen


def steps(marks: dict[str, float]) -> dict[str, float]:
    """Durations between the marks: build+push, candidate ready, tests, service, finish."""
    service = marks.get("promote", marks.get("create-service", 0.0))
    return {
        "build+push+connect": marks["candidate"],
        "candidate group ready": marks["tests"] - marks["candidate"],
        "tests on the candidate": service - marks["tests"],
        "service group ready": marks["service tests"] - service,
        "service tests, confirm": marks["total"] - marks["service tests"],
        "total": marks["total"],
    }


def one_round(
    platform: object, root: Path, index: int
) -> tuple[dict[str, float], dict[str, float]]:
    repo = ModelRepo(root / f"round-{index}", platform, target="bench")  # type: ignore[arg-type]
    repo.write(ready_timeout_s=300, CONFORMANCE_VERSION="1")
    first = steps(timed_deploy(repo))
    repo.write(ready_timeout_s=300, CONFORMANCE_VERSION="2")
    ready = platform.service_url().removesuffix("/score") + "/ready"  # type: ignore[attr-defined]
    with Outage(ready) as outage:
        update = steps(timed_deploy(repo))
    update["outage (longest, GET /ready)"] = outage.longest
    repo.run("down", "-t", repo.target)
    return first, update


def _table(title: str, rounds: list[dict[str, float]]) -> None:
    print(f"\n### {title}: medians of {len(rounds)} rounds (seconds)\n")
    print("| step | median | min | max |\n| --- | ---: | ---: | ---: |")
    for name in rounds[0]:
        values = [r[name] for r in rounds]
        print(
            f"| {name} | {statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dev_env = {name: os.environ[name] for name in DEV_ENV_NAMES if name in os.environ}
    if "REGISTRY_PASSWORD" not in dev_env:
        raise SystemExit('run eval "$(scripts/dev-env)" first')
    firsts, updates = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with aci_platform(root / "platform", dev_env, None) as platform:
            for index in range(args.rounds):
                first, update = one_round(platform, root, index)
                firsts.append(first)
                updates.append(update)
                outage = update["outage (longest, GET /ready)"]
                print(
                    f"round {index + 1}: first {first['total']:.1f} s, update "
                    f"{update['total']:.1f} s, outage {outage:.2f} s"
                )
    _table("First deploy", firsts)
    _table("Update (ACI restarts the service group)", updates)


if __name__ == "__main__":
    main()
