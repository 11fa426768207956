"""Build and deploy times for the example, on the real Docker engine and registry.

Per round, on a fresh copy of example-repo with its own service name and port:
  cold build          `deployer build --no-cache` (every layer, pip installs included;
                      the base image is present)
  first deploy        `deployer deploy -t local` (push, candidate, tests, switch)
  no-op deploy        the same again: no build, no push, no restart, tests only
  model-only rebuild  `deployer build` after a model file changed (dependency layers cached)
  model-only deploy   `deployer deploy -t local` after that change
Then `deployer down --images`. Prints medians over the rounds.

    eval "$(scripts/dev-env)"; .venv/bin/python benchmarks/bench_deploy.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEPLOYER = str(Path(os.environ.get("VIRTUAL_ENV", REPO / ".venv")) / "bin" / "deployer")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _timed(*args: str, cwd: Path) -> float:
    started = time.perf_counter()
    result = subprocess.run([DEPLOYER, *args], cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"deployer {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed


def one_round(tmp: Path) -> dict[str, float]:
    repo = tmp / f"repo-{uuid.uuid4().hex[:6]}"
    shutil.copytree(REPO / "example-repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
    config = repo / "deploy.yaml"
    text = config.read_text().replace("name: diabetes\n", f"name: bench-{uuid.uuid4().hex[:6]}\n")
    config.write_text(text.replace("port: 8080", f"port: {_free_port()}"))
    times: dict[str, float] = {}
    try:
        times["cold build"] = _timed("build", "-t", "local", "--no-cache", cwd=repo)
        times["first deploy"] = _timed("deploy", "-t", "local", cwd=repo)
        times["no-op deploy"] = _timed("deploy", "-t", "local", cwd=repo)
        (repo / "model" / "NOTES.txt").write_text("retrained\n")
        times["model-only rebuild"] = _timed("build", "-t", "local", cwd=repo)
        times["model-only deploy"] = _timed("deploy", "-t", "local", cwd=repo)
    finally:
        subprocess.run(
            [DEPLOYER, "down", "-t", "local", "--images"],
            cwd=repo,
            capture_output=True,
            check=False,
        )
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    rounds: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for index in range(args.rounds):
            rounds.append(one_round(Path(tmp)))
            print(
                f"round {index + 1}: " + ", ".join(f"{k} {v:.1f} s" for k, v in rounds[-1].items())
            )
    print(f"\n{'step':<20} {'median s':>9} {'min s':>7} {'max s':>7}   ({args.rounds} rounds)")
    for step in rounds[0]:
        samples = [r[step] for r in rounds]
        median, low, high = statistics.median(samples), min(samples), max(samples)
        print(f"{step:<20} {median:>9.1f} {low:>7.1f} {high:>7.1f}")


if __name__ == "__main__":
    main()
