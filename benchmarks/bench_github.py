"""What running in GitHub Actions adds to a command: masks, annotations, outputs, the summary,
the last deploy's report looked up among the artifacts, and the sticky comment updated.

Each round runs, as fresh processes and interleaved (so machine noise hits all alike), the
same command locally and as a step of a pull request's job. The job talks to the fake GitHub
of the tests (tests/github/fake_github.py) on 127.0.0.1, holding a pull request with 150
comments (two pages to search for ours) and a deploy report artifact to compare with: so the
GitHub figures are deployer's own work plus loopback HTTP, not GitHub's latency.

    .venv/bin/python benchmarks/bench_github.py [--rounds 11]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.github.fake_github import BOT, serve  # noqa: E402
from tests.github.workflow_job import job_environment  # noqa: E402

HUMAN = {"login": "mona", "id": 583231, "type": "User"}


def _time(command: list[str], cwd: Path, env: dict[str, str] | None) -> float:
    started = time.perf_counter()
    subprocess.run(command, cwd=cwd, env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=11)
    args = parser.parse_args()
    deployer = [sys.executable, "-m", "deployer"]
    with tempfile.TemporaryDirectory() as tmp, serve() as github:
        workspace = Path(tmp)
        repo = workspace / "model-repo"
        shutil.copytree(REPO / "example-repo", repo, ignore=shutil.ignore_patterns("__pycache__"))
        for i in range(150):
            body = "<!-- deployer-report: deploy.yaml -->\nearlier" if i == 120 else f"remark {i}"
            github.add_comment(42, body, BOT if i == 120 else HUMAN)
        report = {"command": "deploy", "targets": [{"name": "edge", "image": "r/d:0"}]}
        github.add_artifact(
            "deploy-report_deploy_deploy.yaml_edge", {"deploy-report.json": json.dumps(report)}
        )
        env = job_environment(github, workspace, "pull_request_opened.json")
        plan = [*deployer, "plan", "-t", "edge", "--no-registry-check", "--report-dir", tmp]
        commands = {
            "validate": ([*deployer, "validate"], None),
            "validate, in Actions": ([*deployer, "validate"], env),
            "plan -t edge": (plan, None),
            "plan -t edge, in Actions": (plan, env),
        }
        for command, environment in commands.values():  # warm caches and .pyc files
            _time(command, repo, environment)
        samples: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.rounds):
            for name, (command, environment) in commands.items():
                samples[name].append(_time(command, repo, environment))
        calls = len(github.requests) // (args.rounds + 1)
    print(f"{'command':<26} {'median ms':>10} {'min ms':>8} {'max ms':>8}   ({args.rounds} rounds)")
    for name, values in samples.items():
        print(
            f"{name:<26} {statistics.median(values) * 1000:>10.0f} "
            f"{min(values) * 1000:>8.0f} {max(values) * 1000:>8.0f}"
        )
    for command in ("validate", "plan -t edge"):
        local = statistics.median(samples[command])
        actions = statistics.median(samples[f"{command}, in Actions"])
        print(f"{command}: in Actions / locally = {actions / local:.2f}")
    print(f"GitHub API requests per plan in Actions: {calls}")


if __name__ == "__main__":
    main()
