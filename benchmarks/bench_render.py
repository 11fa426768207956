"""How long `deployer render -c example-repo/deploy.yaml -o out` takes, as a user runs it.

Each round is a fresh process (interpreter start and imports included), so the figure is
what a user or a CI step waits for. Prints the median and spread over the rounds, and the
import-only cost (`python -c "import deployer.cli"`) measured in the same run for context.

    .venv/bin/python benchmarks/bench_render.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _time(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        render = [
            sys.executable,
            "-m",
            "deployer",
            "render",
            "-c",
            str(REPO / "example-repo" / "deploy.yaml"),
            "-o",
            f"{tmp}/out",
        ]
        python_only = [sys.executable, "-c", "pass"]
        imports = [sys.executable, "-c", "import deployer.cli, deployer.plan, deployer.render"]
        _time(render)  # warm the OS page cache and .pyc files, as an installed package has
        rows = {"render (all 5 targets)": [], "python -c pass": [], "imports only": []}
        for _ in range(args.rounds):  # interleaved, so machine noise hits all alike
            rows["render (all 5 targets)"].append(_time(render))
            rows["python -c pass"].append(_time(python_only))
            rows["imports only"].append(_time(imports))
    print(f"{'command':<24} {'median ms':>10} {'min ms':>8} {'max ms':>8}   ({args.rounds} rounds)")
    for name, samples in rows.items():
        print(
            f"{name:<24} {statistics.median(samples) * 1000:>10.0f} "
            f"{min(samples) * 1000:>8.0f} {max(samples) * 1000:>8.0f}"
        )


if __name__ == "__main__":
    main()
