"""Benchmark: deployer.serving against azureml-inference-server-http, same scripts, same load.

    .venv/bin/python benchmarks/bench_server.py [--scenarios one,two,slow] [--rounds 5]
        [--duration 10] [--variants] [--compare-with REF]

Each scenario starts its servers on 127.0.0.1 and free ports, checks that they give the
same answer, warms each up, then loads them in turn for --duration seconds, --rounds
rounds in rotating order, and reports the medians across rounds:

  one   1 worker each, example-repo/score.py (its ONNX model), wrk -t2 -c16 POST /score:
          ours     python -m deployer.serving (this tree, this .venv)
          azureml  azmlinfsrv 1.5.1 (its own venv, made by benchmarks/azureml_venv.py)
          bare     a bare uvicorn ASGI handler calling the same run() inline (a floor)
          bare-thread (--variants): the same with run() in a thread
        Goal: ours >= 7x azureml's requests/s, and a p99 <= 0.25x azureml's.
  two   2 workers each (ours --workers 2, azureml WORKER_COUNT=2), same load.
        Goal: >= 5x and <= 0.25x.
  slow  benchmarks/slow_score.py, whose run() sleeps 50 ms, 2 workers, wrk -t2 -c8.
        Meanwhile a probe client opens a NEW connection every 100 ms, as the kubelet
        does, for GET /, /ready, /, /ready, /metrics in turn (azureml: GET /, its only
        probe path), and records each probe's latency (pooled over the rounds).
        Goal: >= 90% of the ideal 40 requests/s (2 workers x 1/0.05 s), probe p99 < 50 ms.

--compare-with REF also runs this server as it is at git REF (a worktree in a temporary
directory, PYTHONPATH pointing at it, the same .venv) as "ours@SHA" in the one and slow
scenarios: what the change since REF costs per request (e.g. run() inline on the event
loop, before, against run() on a dedicated thread), and the probe latencies before/after.

Every server listens on 127.0.0.1 only (checked from /proc), every client connects there.
Ends with a table for the README. Needs wrk (Debian: ``apt-get install -y wrk``).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import importlib.util
import json
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
EXAMPLE = REPO / "example-repo"
SLOW_SCRIPT = HERE / "slow_score.py"
SLOW_RUN_S = 0.05  # what slow_score.run() sleeps
sys.path.insert(0, str(HERE))
import azureml_venv  # noqa: E402
from git_worktree import worktree  # noqa: E402

HOST = "127.0.0.1"
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
# What the kubelet does by default: a new connection per probe, 1 s timeout.
PROBE_INTERVAL_S = 0.1
PROBE_TIMEOUT_S = 1.0
PROBE_PATHS = ("/", "/ready", "/", "/ready", "/metrics")
AZUREML_PROBE_PATHS = ("/",)  # azmlinfsrv has no /ready nor /metrics
# azmlinfsrv binds 0.0.0.0 (constants.DEFAULT_HOST), with no option to change it: this
# starts it as its console script does, with that constant set to 127.0.0.1 first.
AZUREML_MAIN = (
    "import sys; import azureml_inference_server_http.constants as c; "
    f"c.DEFAULT_HOST = {HOST!r}; "
    "from azureml_inference_server_http.amlserver import run; "
    "sys.argv[0] = 'azmlinfsrv'; sys.exit(run())"
)
# Settings the servers would read from our environment: none of them leaks in.
_SCRUBBED = ("WORKER_COUNT", "SERVER_PORT", "HEALTH_PORT", "SCORING_TIMEOUT_MS", "PYTHONPATH")
_SCRUBBED_PREFIXES = ("DEPLOYER_", "AZUREML_", "AML_")


class BenchError(Exception):
    """Something the benchmark cannot go on without (a server that does not start...)."""


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def clean_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in _SCRUBBED and not k.startswith(_SCRUBBED_PREFIXES)
    }
    env.update(extra)
    return env


@dataclass
class Server:
    name: str
    argv: list[str]
    cwd: Path
    env: dict[str, str]
    port: int
    ready_path: str  # 200 once it can score
    probe_paths: tuple[str, ...]
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    log: Path | None = None

    def start(self, logdir: Path) -> None:
        self.log = logdir / f"{self.name}-{self.port}.log"
        with self.log.open("wb") as err:
            # Access logs go to /dev/null for all: each pays for formatting and writing.
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=subprocess.DEVNULL,
                stderr=err,
                start_new_session=True,
            )

    def log_tail(self, lines: int = 15) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def wait_until_ready(self, timeout: float = 120) -> None:
        """Until ``ready_path`` answers 200 five times in a row, each on a new connection
        (with several workers, each connection may reach another one)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        in_a_row = 0
        while in_a_row < 5:
            if self.proc.poll() is not None:
                raise BenchError(
                    f"{self.name} exited with {self.proc.returncode} before it was ready:\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"{self.name} not ready after {timeout} s:\n{self.log_tail()}")
            _, outcome = probe_once(self.port, self.ready_path, timeout=2)
            in_a_row = in_a_row + 1 if outcome == "200" else 0
            if in_a_row == 0:
                time.sleep(0.2)

    def terminate(self) -> None:
        """SIGTERM to its process group (it and its workers), if it still runs."""
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)

    def wait(self) -> None:
        if self.proc is None:
            return
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    script: Path
    workers: int
    connections: int
    kinds: tuple[str, ...]  # ours, old, azureml, bare, bare-thread
    probes: bool = False


@dataclass
class Context:
    azure_python: Path
    old_code: Path | None = None
    old_name: str = ""


def make_server(kind: str, scenario: Scenario, ctx: Context) -> Server:
    port = free_port()
    script, model_dir = scenario.script, str(EXAMPLE)
    if kind in ("ours", "old"):
        code = REPO if kind == "ours" else ctx.old_code
        assert code is not None
        argv = [sys.executable, "-m", "deployer.serving", "--entry-script", str(script)]
        argv += ["--model-dir", model_dir, "--port", str(port), "--workers", str(scenario.workers)]
        env = clean_env(PYTHONPATH=str(code), DEPLOYER_SERVER_HOST=HOST)
        name = "ours" if kind == "ours" else ctx.old_name
        return Server(name, argv, code, env, port, "/ready", PROBE_PATHS)
    if kind == "azureml":
        argv = [str(ctx.azure_python), "-c", AZUREML_MAIN, "--entry_script", script.name]
        argv += ["--model_dir", model_dir, "--port", str(port)]
        # Its app root (sys.path) is the working directory, as in its container.
        env = clean_env(AZUREML_MODEL_DIR=model_dir, WORKER_COUNT=str(scenario.workers))
        return Server("azureml", argv, script.parent, env, port, "/", AZUREML_PROBE_PATHS)
    assert scenario.workers == 1
    mode = kind.replace("-", "_")
    argv = [sys.executable, str(HERE / "bare_app.py"), mode, str(script), model_dir, str(port)]
    env = clean_env(PYTHONPATH=str(REPO))
    return Server(kind, argv, REPO, env, port, "/", ("/",))


@contextlib.contextmanager
def running(servers: list[Server], logdir: Path) -> Iterator[None]:
    try:
        for server in servers:
            server.start(logdir)
        for server in servers:
            server.wait_until_ready()
        yield
    finally:
        for server in servers:
            server.terminate()
        for server in servers:
            server.wait()


def code_of(code: Path) -> str:
    """Where ``python -m deployer.serving`` imports the package from, with PYTHONPATH=code."""
    done = subprocess.run(
        [sys.executable, "-c", "import deployer.serving as s; print(s.__file__)"],
        cwd=code,
        env=clean_env(PYTHONPATH=str(code)),
        capture_output=True,
        text=True,
        check=True,
    )
    return str(Path(done.stdout.strip()).parent)


# --- what listens where, from /proc ----------------------------------------------------------


def _descendants(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _listening() -> dict[str, str]:
    """Socket inode -> "address:port" for every TCP socket in LISTEN state."""
    out: dict[str, str] = {}
    for table, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] != "0A":  # LISTEN
                    continue
                address, port = fields[1].split(":")
                if v6:  # only the two usual ones spelled out
                    ip = {"0" * 32: "[::]", "0" * 24 + "01000000": "[::1]"}.get(address, address)
                else:
                    ip = ".".join(str(b) for b in reversed(bytes.fromhex(address)))
                out[fields[9]] = f"{ip}:{int(port, 16)}"
    return out


def listening_addresses(server: Server) -> set[str]:
    """What the server's processes (it and its descendants) listen on."""
    assert server.proc is not None
    listening = _listening()
    found: set[str] = set()
    for pid in _descendants(server.proc.pid):
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:["):
                        inode = target[8:-1]
                        if inode in listening:
                            found.add(listening[inode])
    return found


def check_loopback(servers: list[Server]) -> None:
    parts = []
    for server in servers:
        addresses = listening_addresses(server)
        parts.append(f"{server.name} {', '.join(sorted(addresses)) or '?'}")
        others = [a for a in addresses if not a.startswith(f"{HOST}:")]
        if others:
            print(f"  WARNING: {server.name} also listens on {', '.join(others)}")
    print(f"  listening: {'; '.join(parts)}")


# --- clients ---------------------------------------------------------------------------------


def post(port: int) -> bytes:
    conn = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        conn.request("POST", "/score", BODY, {"Content-Type": "application/json"})
        response = conn.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"POST /score on port {port}: {response.status} {body[:300]!r}")
        return body
    finally:
        conn.close()


def probe_once(port: int, path: str, timeout: float = PROBE_TIMEOUT_S) -> tuple[float, str]:
    """GET path on a new connection, as the kubelet does: (seconds, status or error)."""
    started = time.perf_counter()
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"User-Agent": "kube-probe/1.30", "Connection": "close"})
        response = conn.getresponse()
        response.read()
        outcome = str(response.status)
    except (OSError, http.client.HTTPException) as exc:
        outcome = type(exc).__name__
    finally:
        conn.close()
    elapsed = time.perf_counter() - started
    if elapsed > timeout and outcome == "200":
        outcome = "slower than the timeout"
    return elapsed, outcome


class Prober:
    """Probes a server every PROBE_INTERVAL_S, one at a time, over a window of a run."""

    def __init__(self, server: Server, start_in: float, window: float):
        self.server = server
        self.samples: list[tuple[str, float, str]] = []  # path, seconds, outcome
        self._stop = threading.Event()
        self._start_in, self._window = start_in, window
        self._thread = threading.Thread(target=self._loop, name="prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        if self._stop.wait(self._start_in):
            return
        paths = self.server.probe_paths
        tick = time.perf_counter()
        end = tick + self._window
        n = 0
        while not self._stop.is_set() and time.perf_counter() < end:
            path = paths[n % len(paths)]
            n += 1
            seconds, outcome = probe_once(self.server.port, path)
            self.samples.append((path, seconds, outcome))
            tick += PROBE_INTERVAL_S
            delay = tick - time.perf_counter()
            if delay < 0:  # the probe took longer than the interval: next one now
                tick, delay = time.perf_counter(), 0
            self._stop.wait(delay)


def run_wrk(port: int, duration: int, script: Path, connections: int) -> dict[str, float]:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    done = subprocess.run(
        [*argv, f"http://{HOST}:{port}/score"],
        capture_output=True,
        text=True,
        check=False,
        timeout=duration + 60,
    )
    out = done.stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done.returncode != 0 or rps is None:
        raise BenchError(f"wrk failed ({done.returncode}):\n{out}\n{done.stderr}")
    result = {"rps": float(rps.group(1))}
    for pct in ("50", "99"):
        found = re.search(rf"\s{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\b", out)
        result[f"p{pct}"] = float(found.group(1)) * _UNITS[found.group(2)] if found else math.nan
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = re.search(r"Socket errors: (.*)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    if socket_errors:
        print(f"    (socket errors: {socket_errors.group(1)})")
    return result


# --- statistics and tables -------------------------------------------------------------------


def percentile(values: list[float], pct: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]


@dataclass
class Result:
    runs: list[dict[str, float]] = field(default_factory=list)
    probes: list[tuple[str, float, str]] = field(default_factory=list)

    def median(self, key: str) -> float:
        return statistics.median(r[key] for r in self.runs)

    @property
    def probe_ms(self) -> list[float]:
        """Every probe's latency, failed ones included (a timed-out one counts its wait)."""
        return [seconds * 1e3 for _, seconds, _ in self.probes]

    @property
    def probe_failures(self) -> dict[str, int]:
        failed: dict[str, int] = {}
        for path, _, outcome in self.probes:
            if outcome != "200":
                key = f"{path} {outcome}"
                failed[key] = failed.get(key, 0) + 1
        return failed


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b):
        return "-"
    return f"{a / b:.2f}x" if a / b >= 0.1 else f"{a / b:.3f}x"


def run_scenario(
    scenario: Scenario, args: argparse.Namespace, ctx: Context, tmp: Path
) -> dict[str, Result]:
    servers = [make_server(kind, scenario, ctx) for kind in scenario.kinds]
    workers = "1 worker" if scenario.workers == 1 else f"{scenario.workers} workers"
    print(
        f"\n== {scenario.key}: {scenario.title} ({workers}, {scenario.script.name}, "
        f"wrk -t2 -c{scenario.connections})",
        flush=True,
    )
    lua = tmp / "post.lua"
    lua.write_text(LUA)
    results = {server.name: Result() for server in servers}
    with running(servers, tmp):
        check_loopback(servers)
        bodies = {server.name: json.loads(post(server.port)) for server in servers}
        print(f"  POST /score -> {bodies}")
        if len({json.dumps(b) for b in bodies.values()}) != 1:
            raise BenchError("the servers disagree on the answer")
        for server in servers:  # warm up (imports, caches, CPU frequency)
            run_wrk(server.port, min(2, args.duration), lua, scenario.connections)
        for round_no in range(args.rounds):
            shift = round_no % len(servers)
            for server in servers[shift:] + servers[:shift]:
                line = f"  round {round_no + 1} {server.name:14s}"
                if scenario.probes:
                    margin = min(0.5, args.duration / 10)
                    with Prober(server, margin, args.duration - 2 * margin) as prober:
                        r = run_wrk(server.port, args.duration, lua, scenario.connections)
                    results[server.name].probes += prober.samples
                    ms = [seconds * 1e3 for _, seconds, _ in prober.samples]
                    failed = sum(outcome != "200" for _, _, outcome in prober.samples)
                    probes = (
                        f"  probes {len(prober.samples)}: p50 {percentile(ms, 50):6.1f} "
                        f"p99 {percentile(ms, 99):6.1f} max {max(ms, default=math.nan):6.1f} "
                        f"ms, {failed} failed"
                    )
                else:
                    r = run_wrk(server.port, args.duration, lua, scenario.connections)
                    probes = ""
                results[server.name].runs.append(r)
                print(
                    f"{line} {r['rps']:9.1f} req/s  p50 {r['p50']:7.2f} ms  "
                    f"p99 {r['p99']:7.2f} ms  non-2xx {r['errors']:.0f}{probes}",
                    flush=True,
                )
    return results


def print_scenario(
    scenario: Scenario, results: dict[str, Result], args: argparse.Namespace
) -> None:
    workers = "1 worker" if scenario.workers == 1 else f"{scenario.workers} workers"
    print(
        f"\n### {scenario.title}: {workers}, {scenario.script.name}, wrk -t2 "
        f"-c{scenario.connections}, medians of {args.rounds} x {args.duration} s\n"
    )
    if scenario.probes:
        ideal = scenario.workers / SLOW_RUN_S
        print(
            f"| server | requests/s | of the ideal {ideal:g} | p50 (ms) | p99 (ms) "
            "| probes | probe p50 (ms) | probe p99 (ms) | probe max (ms) | probes failed |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
        for name, res in results.items():
            ms = res.probe_ms
            failures = ", ".join(f"{k}: {v}" for k, v in res.probe_failures.items()) or "0"
            print(
                f"| {name} | {res.median('rps'):.1f} | {res.median('rps') / ideal:.0%} "
                f"| {res.median('p50'):.1f} | {res.median('p99'):.1f} | {len(res.probes)} "
                f"| {percentile(ms, 50):.2f} | {percentile(ms, 99):.2f} "
                f"| {max(ms, default=math.nan):.2f} | {failures} |"
            )
        print(
            f"\n(probes: pooled over the rounds, failed ones included; paths "
            f"{', '.join(PROBE_PATHS)} in turn, azureml {', '.join(AZUREML_PROBE_PATHS)})"
        )
    else:
        print("| server | requests/s | p50 (ms) | p99 (ms) |")
        print("| --- | ---: | ---: | ---: |")
        for name, res in results.items():
            print(
                f"| {name} | {res.median('rps'):,.0f} | {res.median('p50'):.2f} "
                f"| {res.median('p99'):.2f} |"
            )
    print()
    ours = results["ours"]
    others = [n for n in results if n != "ours" and not n.startswith("bare")]
    for other in others:
        res = results[other]
        why = " (what the change since then costs)" if other.startswith("ours@") else ""
        print(
            f"ours / {other}{why}: {ratio(ours.median('rps'), res.median('rps'))} requests/s, "
            f"p99 {ratio(ours.median('p99'), res.median('p99'))}"
            + (
                f", probe p99 {ratio(percentile(ours.probe_ms, 99), percentile(res.probe_ms, 99))}"
                if scenario.probes
                else ""
            )
        )
    for bare in ("bare", "bare-thread"):
        if bare in results:
            print(f"ours / {bare}: {ratio(ours.median('rps'), results[bare].median('rps'))} req/s")


def print_summary(
    scenarios: list[Scenario], all_results: dict[str, dict[str, Result]], ctx: Context
) -> None:
    old = ctx.old_name if ctx.old_code else ""
    columns = ["ours", "azureml", "ours / azureml", "goal"]
    if old:
        columns += [old, f"ours / {old}"]
    print(f"\n### Summary ({os.cpu_count()} CPUs)\n")
    print("| scenario | figure | " + " | ".join(columns) + " |")
    print("| --- | --- | " + " | ".join("---:" for _ in columns) + " |")

    def row(title: str, figure: str, values: dict[str, float], fmt: str, goal: str) -> None:
        def cell(name: str) -> str:
            value = values.get(name, math.nan)
            return "-" if math.isnan(value) else format(value, fmt)

        ours = values.get("ours", math.nan)
        cells = [
            cell("ours"),
            cell("azureml"),
            ratio(ours, values.get("azureml", math.nan)) if goal.endswith("x") else "",
            goal,
        ]
        if old:
            cells += [cell(old), ratio(ours, values.get(old, math.nan))]
        print(f"| {title} | {figure} | " + " | ".join(cells) + " |")

    goals = {"one": (">= 7x", "<= 0.25x"), "two": (">= 5x", "<= 0.25x")}
    for scenario in scenarios:
        results = all_results[scenario.key]
        if scenario.probes:
            ideal = scenario.workers / SLOW_RUN_S
            title = f"run() 50 ms, {scenario.workers} workers, {scenario.connections} conn."
            rps = {n: r.median("rps") for n, r in results.items()}
            row(title, "requests/s", rps, ".1f", "")
            share = {n: 100 * v / ideal for n, v in rps.items()}
            row(title, f"% of the ideal {ideal:g} req/s", share, ".0f", ">= 90")
            for label, pct in (("probe p50 (ms)", 50), ("probe p99 (ms)", 99)):
                values = {n: percentile(r.probe_ms, pct) for n, r in results.items()}
                row(title, label, values, ".2f", "< 50" if pct == 99 else "")
            maxima = {n: max(r.probe_ms, default=math.nan) for n, r in results.items()}
            row(title, "probe max (ms)", maxima, ".2f", "")
            failed = {n: float(sum(r.probe_failures.values())) for n, r in results.items()}
            row(title, "probes failed", failed, ".0f", "0")
        else:
            title = "1 worker each" if scenario.workers == 1 else f"{scenario.workers} workers each"
            rps_goal, p99_goal = goals.get(scenario.key, ("", ""))
            rps = {n: r.median("rps") for n, r in results.items()}
            p99 = {n: r.median("p99") for n, r in results.items()}
            row(title, "requests/s", rps, ",.0f", rps_goal)
            row(title, "p99 (ms)", p99, ".2f", p99_goal)


# --- main ------------------------------------------------------------------------------------


def scenarios_for(args: argparse.Namespace, ctx: Context) -> list[Scenario]:
    old = ("old",) if ctx.old_code else ()
    bare: tuple[str, ...] = ("bare", "bare-thread") if args.variants else ("bare",)
    if importlib.util.find_spec("uvicorn") is None:
        print("uvicorn is not installed: skipping the bare uvicorn reference servers")
        bare = ()
    example = EXAMPLE / "score.py"
    known = {
        "one": Scenario(
            "one", "1 worker each", example, 1, args.connections, ("ours", "azureml", *bare, *old)
        ),
        "two": Scenario("two", "2 workers each", example, 2, args.connections, ("ours", "azureml")),
        "slow": Scenario(
            "slow",
            "run() sleeps 50 ms",
            SLOW_SCRIPT,
            2,
            args.slow_connections,
            ("ours", "azureml", *old),
            probes=True,
        ),
    }
    return [known[key] for key in args.scenarios]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument(
        "--scenarios",
        default="one,two,slow",
        help="comma-separated, among one, two, slow (default: all)",
    )
    parser.add_argument("--connections", type=int, default=16, help="wrk -c in one and two")
    parser.add_argument("--slow-connections", type=int, default=8, help="wrk -c in slow")
    parser.add_argument("--variants", action="store_true", help="also bare-thread (in one)")
    parser.add_argument(
        "--compare-with",
        metavar="REF",
        help="also run the server at git REF (in one and slow), from a worktree",
    )
    args = parser.parse_args()
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - {"one", "two", "slow"}
    if unknown or not args.scenarios:
        parser.error(f"--scenarios: unknown {sorted(unknown)}; choose among one, two, slow")
    if args.duration < 1 or args.rounds < 1:
        parser.error("--duration and --rounds must be at least 1")
    return args


def main() -> int:
    args = parse_args()
    if shutil.which("wrk") is None:
        print("wrk is not installed. On Debian/Ubuntu: apt-get install -y wrk", file=sys.stderr)
        return 2
    if not (EXAMPLE / "score.py").exists() or not (EXAMPLE / "model" / "diabetes.onnx").exists():
        print(f"missing {EXAMPLE}/score.py or model/diabetes.onnx", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_name, contextlib.ExitStack() as stack:
        tmp = Path(tmp_name)
        ctx = Context(azureml_venv.ensure())
        print(f"ours: deployer.serving from {code_of(REPO)}")
        if args.compare_with:
            sha = subprocess.run(
                ["git", "-C", str(REPO), "rev-parse", "--short", f"{args.compare_with}^{{commit}}"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            ctx.old_code = stack.enter_context(worktree(sha, tmp))
            ctx.old_name = f"ours@{sha}"
            print(f"{ctx.old_name} ({args.compare_with}): from {code_of(ctx.old_code)}")
        scenarios = scenarios_for(args, ctx)
        all_results: dict[str, dict[str, Result]] = {}
        for scenario in scenarios:
            all_results[scenario.key] = run_scenario(scenario, args, ctx, tmp)
    for scenario in scenarios:
        print_scenario(scenario, all_results[scenario.key], args)
    print_summary(scenarios, all_results, ctx)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (BenchError, subprocess.CalledProcessError, RuntimeError) as exc:
        detail = getattr(exc, "stderr", None)
        print(f"error: {exc}" + (f"\n{detail}" if detail else ""), file=sys.stderr)
        sys.exit(1)
