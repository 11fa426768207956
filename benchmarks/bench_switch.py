"""Failed requests while the ``local`` target switches versions under steady load.

One model repo (the example, with the conformance suite's fault switches in score.py) is
deployed once; then each round, while an independent client keeps scoring on keep-alive
connections (2 threads, counting every request without the right answer), it runs:

  switch            a good new version (a new environment variable): deployed
  fails its tests   a version that answers wrong: rolled back before it takes traffic
  port taken        the new version passes its tests, then cannot have the service port
                    (deploy.yaml moves it to a port another program holds): rolled back
  dies serving      a version that passes its tests, then exits under traffic: rolled back
                    after it took over (this deployer only: an older one has no such step)

With ``--compare-with REF`` the same rounds also run, interleaved, with deployer as it was at
git ref REF (from a worktree, on its own service and port), for a side-by-side baseline.

    eval "$(scripts/dev-env)"; .venv/bin/python benchmarks/bench_switch.py [--rounds 5]
        [--compare-with REF]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deployer.targets.local.driver import free_port  # noqa: E402
from tests.conformance.harness import Load, copy_model_repo, deploy_yaml  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from git_worktree import worktree  # noqa: E402


@dataclass
class Service:
    """One model repo deployed by one deployer (this checkout, or an older tree)."""

    label: str
    code: Path  # the deployer source tree to run
    root: Path
    deadlines: bool  # does this deployer know targets.<name>.ready_timeout_s?
    port: int = field(default_factory=free_port)
    name: str = field(default_factory=lambda: f"bench-{uuid.uuid4().hex[:6]}")

    def __post_init__(self) -> None:
        self.template = copy_model_repo(self.root)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/score"

    def write(self, port: int | None = None, **variables: str) -> None:
        deadline = ", ready_timeout_s: 60" if self.deadlines else ""
        target = f"{{type: local, port: {port or self.port}{deadline}}}"
        text = deploy_yaml(self.template, self.name, "local", target, variables)
        (self.root / "deploy.yaml").write_text(text)

    def deployer(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "PYTHONPATH": str(self.code)}
        return subprocess.run(
            [sys.executable, "-m", "deployer", *args, "-c", str(self.root / "deploy.yaml")],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            cwd=self.root,
        )

    def deploy(self) -> tuple[int, float]:
        started = time.perf_counter()
        result = self.deployer("deploy", "-t", "local", "--report-dir", str(self.root / "r"))
        return result.returncode, time.perf_counter() - started


@dataclass
class Sample:
    failed: int
    total: int
    seconds: float
    code: int


def run_scenario(service: Service, scenario: str, round_no: int) -> Sample:
    held: socket.socket | None = None
    if scenario == "switch":
        service.write(BENCH_ROUND=str(round_no))
    elif scenario == "fails its tests":
        service.write(CONFORMANCE_WRONG_ANSWERS="1")
    elif scenario == "port taken":
        held = socket.socket()
        held.bind(("127.0.0.1", 0))
        held.listen()
        service.write(port=held.getsockname()[1], BENCH_ROUND=f"{round_no}-moved")
    elif scenario == "dies serving":
        service.write(CONFORMANCE_CRASH_AFTER="80")
    try:
        with Load(service.url).running() as load:
            code, seconds = service.deploy()
            time.sleep(0.5)  # what follows the deploy counts too
    finally:
        if held is not None:
            held.close()
        service.write(BENCH_ROUND=str(round_no))  # the live version's config again
    return Sample(load.failed, load.ok + load.failed, seconds, code)


SCENARIOS = ("switch", "fails its tests", "port taken", "dies serving")
EXPECTED_CODE = {"switch": 0, "fails its tests": 1, "port taken": 1, "dies serving": 1}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare-with", metavar="REF", help="also run deployer at git REF")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        services = [Service("this", REPO, Path(tmp) / "this", deadlines=True)]
        if args.compare_with:
            old = stack.enter_context(worktree(args.compare_with, Path(tmp)))
            services.append(Service(args.compare_with, old, Path(tmp) / "old", deadlines=False))
        for service in services:
            service.write(BENCH_ROUND="0")
            code, _ = service.deploy()
            if code != 0:
                raise SystemExit(f"the first deploy with {service.label} failed")
        samples: dict[tuple[str, str], list[Sample]] = {}
        try:
            for round_no in range(1, args.rounds + 1):
                for service in services:
                    for scenario in SCENARIOS:
                        if scenario == "dies serving" and service.code != REPO:
                            continue
                        sample = run_scenario(service, scenario, round_no)
                        samples.setdefault((scenario, service.label), []).append(sample)
                        print(
                            f"round {round_no} {service.label:<8} {scenario:<16} exit "
                            f"{sample.code}: {sample.failed} failed of {sample.total} requests, "
                            f"deploy {sample.seconds:.1f} s",
                            flush=True,
                        )
        finally:
            for service in services:
                service.deployer("down", "-t", "local", "--images")
    print(
        f"\n{'scenario':<16} {'deployer':<10} {'failed (median, min-max)':>26} "
        f"{'requests':>9} {'deploy s':>9} {'exit':>5}   ({args.rounds} rounds)"
    )
    for (scenario, label), runs in samples.items():
        failed = [s.failed for s in runs]
        codes = sorted({s.code for s in runs})
        print(
            f"{scenario:<16} {label:<10} "
            f"{statistics.median(failed):>12g} ({min(failed)}-{max(failed)}){'':>6} "
            f"{statistics.median(s.total for s in runs):>9g} "
            f"{statistics.median(s.seconds for s in runs):>9.1f} "
            f"{','.join(map(str, codes)):>5}"
        )
        if scenario in EXPECTED_CODE and label == "this" and codes != [EXPECTED_CODE[scenario]]:
            print(f"  unexpected exit codes for {scenario}: {codes}")


if __name__ == "__main__":
    main()
