"""Benchmark: deployer.serving against azureml-inference-server-http, same model, same load.

    .venv/bin/python benchmarks/bench_server.py [--rounds 5] [--duration 10] [--variants]

Starts, on 127.0.0.1 and free ports, each with its defaults and one worker:
  * ours:     python -m deployer.serving (this repo's .venv)
  * azureml:  azmlinfsrv 1.5.1 (its own venv, created by benchmarks/azureml_venv.py)
  * bare:     a bare uvicorn ASGI handler calling the same run() (reference floor)
  * bare-thread (--variants): the same with run() in a thread, to price a hand-off
all on example-repo/score.py and its ONNX model. Then it loads each in turn with
``wrk -t2 -c16`` (POST /score, one row), several rounds in rotating order, and prints
the medians across rounds of requests/s, p50 and p99, and our ratio to Azure ML.
Needs wrk (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example-repo"
sys.path.insert(0, str(Path(__file__).resolve().parent))
import azureml_venv  # noqa: E402

ROW = [
    0.038076,
    0.05068,
    0.061696,
    0.021872,
    -0.044223,
    -0.034821,
    -0.043401,
    -0.002592,
    0.019907,
    -0.017646,
]
BODY = json.dumps({"data": [ROW]})
LUA = f"""wrk.method = "POST"
wrk.body = '{BODY}'
wrk.headers["Content-Type"] = "application/json"
"""
_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_until_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as response:
            if response.status == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} not up after {timeout} s")


def post(port: int) -> bytes:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/score",
        data=BODY.encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body: bytes = response.read()
        return body


@contextlib.contextmanager
def servers(variants: bool, logdir: Path) -> Iterator[dict[str, int]]:
    azure_python = azureml_venv.ensure()
    model_dir = str(EXAMPLE)
    env = {**os.environ, "AZUREML_MODEL_DIR": model_dir}
    commands: dict[str, tuple[list[str], Path, str]] = {}
    ports = {name: free_port() for name in ("ours", "azureml", "bare", "bare-thread")}
    commands["ours"] = (
        [
            sys.executable,
            "-m",
            "deployer.serving",
            "--entry-script",
            str(EXAMPLE / "score.py"),
            "--model-dir",
            model_dir,
            "--port",
            str(ports["ours"]),
        ],
        REPO,
        "/ready",
    )
    commands["azureml"] = (
        [
            str(azure_python.parent / "azmlinfsrv"),
            "--entry_script",
            "score.py",
            "--model_dir",
            model_dir,
            "--port",
            str(ports["azureml"]),
        ],
        EXAMPLE,
        "/",
    )
    bare = Path(__file__).resolve().parent / "bare_app.py"
    modes = ("bare", "bare-thread") if variants else ("bare",)
    if importlib.util.find_spec("uvicorn") is None:
        print("uvicorn is not installed: skipping the bare uvicorn reference servers")
        modes = ()
    for mode in modes:
        commands[mode] = (
            [
                sys.executable,
                str(bare),
                mode.replace("-", "_"),
                str(EXAMPLE / "score.py"),
                model_dir,
                str(ports[mode]),
            ],
            REPO,
            "/",
        )
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, (argv, cwd, _) in commands.items():
            log = (logdir / f"{name}.log").open("wb")
            # Access logs go to /dev/null for all: each pays for formatting and writing.
            procs[name] = subprocess.Popen(
                argv,
                cwd=cwd,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        for name, (_, _, probe) in commands.items():
            wait_until_up(f"http://127.0.0.1:{ports[name]}{probe}", procs[name])
        yield {name: ports[name] for name in commands}
    finally:
        for proc in procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def run_wrk(port: int, duration: int, script: Path, connections: int) -> dict[str, float]:
    out = subprocess.run(
        [
            "wrk",
            "-t2",
            f"-c{connections}",
            f"-d{duration}s",
            "--latency",
            "-s",
            str(script),
            f"http://127.0.0.1:{port}/score",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 60,
    ).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))}  # type: ignore[union-attr]
    for pct in ("50", "99"):
        value, unit = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)\b", out).groups()  # type: ignore[union-attr]
        result[f"p{pct}"] = float(value) * _UNITS[unit]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    if socket_errors:
        print(f"    (socket errors: {socket_errors.group(1)})")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--variants", action="store_true", help="also bare-thread")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not (EXAMPLE / "score.py").exists() or not (EXAMPLE / "model" / "diabetes.onnx").exists():
        print(f"missing {EXAMPLE}/score.py or model/diabetes.onnx", file=sys.stderr)
        return 2

    with tempfile.TemporaryDirectory() as tmp, servers(args.variants, Path(tmp)) as ports:
        script = Path(tmp) / "post.lua"
        script.write_text(LUA)
        bodies = {name: json.loads(post(port)) for name, port in ports.items()}
        print(f"POST /score {BODY}\n  -> {bodies}")
        if len({json.dumps(b) for b in bodies.values()}) != 1:
            print("the servers disagree on the answer", file=sys.stderr)
            return 1
        names = list(ports)
        for name in names:  # warm up (imports, caches, CPU frequency)
            run_wrk(ports[name], 2, script, args.connections)
        results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
        for round_no in range(args.rounds):
            order = names[round_no % len(names) :] + names[: round_no % len(names)]
            for name in order:
                r = run_wrk(ports[name], args.duration, script, args.connections)
                results[name].append(r)
                print(
                    f"round {round_no + 1} {name:12s} {r['rps']:9.0f} req/s  "
                    f"p50 {r['p50']:7.2f} ms  p99 {r['p99']:7.2f} ms  non-2xx {r['errors']:.0f}"
                )

    med = {
        n: {k: statistics.median(r[k] for r in rs) for k in ("rps", "p50", "p99")}
        for n, rs in results.items()
    }
    print(
        f"\nmedians over {args.rounds} rounds of {args.duration} s, wrk -t2 -c{args.connections}, "
        f"{os.cpu_count()} CPUs:\n"
    )
    print("| server | requests/s | p50 (ms) | p99 (ms) |")
    print("| --- | ---: | ---: | ---: |")
    for name, m in med.items():
        print(f"| {name} | {m['rps']:,.0f} | {m['p50']:.2f} | {m['p99']:.2f} |")
    ours, azure = med["ours"], med["azureml"]
    print(
        f"\nours / azureml: {ours['rps'] / azure['rps']:.1f}x requests/s (goal >= 7x); "
        f"p99 {ours['p99'] / azure['p99']:.2f}x of azureml's (goal <= 0.25x)"
    )
    if "bare" in med:
        print(f"ours / bare uvicorn: {ours['rps'] / med['bare']['rps']:.2f}x requests/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
