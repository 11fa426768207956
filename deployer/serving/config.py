"""Server settings: command-line flags over environment variables over defaults.

The environment variable names are the ones Azure ML's inference server reads
(``AZUREML_ENTRY_SCRIPT``, ``AZUREML_MODEL_DIR``, ``WORKER_COUNT``, ``SCORING_TIMEOUT_MS``,
``SERVER_PORT``) plus ours (``DEPLOYER_SERVER_*``, ``DEPLOYER_MAX_REQUEST_BYTES``,
``DEPLOYER_CANDIDATE_PORT``, ``DEPLOYER_INSTANCE``, ``DEPLOYER_STATE_DIR``); the toolkit's
Dockerfile and deploy targets set them, so the names are part of the contract.

With ``DEPLOYER_SCORING_KEY`` set (and optionally ``DEPLOYER_SCORING_KEY_SECONDARY``, also
accepted, so a key can be rotated without downtime), ``/score`` and ``/swagger.json`` need
``Authorization: Bearer <key>`` (app.py). Keys come from the environment only, never from
flags: a command line is visible to every user of the host (``ps``), and the supervisor
passes its settings to workers as flags while they inherit its environment.

``--instance`` names the control socket (control.py) through which a deploy hands the
service port from one running version to the next; ``--candidate-port`` starts a new
version on a private port until it is told to take the service port over (instance.py).
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_WORKERS = 1
# Azure ML's default (one hour): a run() that is slow on purpose keeps working after a move.
DEFAULT_SCORING_TIMEOUT_MS = 3_600_000
DEFAULT_MAX_REQUEST_BYTES = 104_857_600
# Overload limits, per worker (uvicorn's limit_concurrency is the model): past them an
# answer comes at once (503, Retry-After) instead of a queue without end.
DEFAULT_LIMIT_CONCURRENCY = 100
DEFAULT_MAX_CONNECTIONS = 1000
# A request line and its headers must arrive within this long of their first byte
# (slowloris); a client this slow on a scoring API is broken or hostile.
DEFAULT_HEADER_TIMEOUT_S = 10
# What SIGTERM's drain adds on top of the longest run() allowed (writing the answers
# out). Targets give the container this plus their own margin before SIGKILL.
DRAIN_MARGIN_S = 2
# Where the promotion marker lives: inside the container's own filesystem, so it survives
# a restart of that container and dies with it.
DEFAULT_STATE_DIR = "/tmp/deployer-serving"
# A scoring key shorter than this is refused at start: 16 characters of a random
# token_urlsafe() key carry 96 bits, and anything shorter is more likely a placeholder
# ("changeme", an unfilled "${SCORING_KEY}") than a key; the keys deployer's docs suggest
# (secrets.token_urlsafe(32)) have 43.
MIN_KEY_LENGTH = 16
_KEY_CHARS = re.compile(r"[\x21-\x7e]+")  # visible ASCII: it arrives in an HTTP header
# Instance names become part of a socket address and a file name: keep them plain.
INSTANCE_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")

# option dest -> environment variables, first match wins. SERVER_PORT is the name
# azureml-inference-server-http declares for its port (ENV_PORT), accepted as an alias.
ENV_NAMES: dict[str, tuple[str, ...]] = {
    "entry_script": ("AZUREML_ENTRY_SCRIPT",),
    "model_dir": ("AZUREML_MODEL_DIR",),
    "host": ("DEPLOYER_SERVER_HOST",),
    "port": ("DEPLOYER_SERVER_PORT", "SERVER_PORT"),
    "workers": ("WORKER_COUNT",),
    "scoring_timeout_ms": ("SCORING_TIMEOUT_MS",),
    "max_request_bytes": ("DEPLOYER_MAX_REQUEST_BYTES",),
    "limit_concurrency": ("DEPLOYER_LIMIT_CONCURRENCY",),
    "max_connections": ("DEPLOYER_MAX_CONNECTIONS",),
    "header_timeout_s": ("DEPLOYER_HEADER_TIMEOUT_S",),
    "candidate_port": ("DEPLOYER_CANDIDATE_PORT",),
    "instance": ("DEPLOYER_INSTANCE",),
    "state_dir": ("DEPLOYER_STATE_DIR",),
    # Environment only (no flags): see the module docstring.
    "scoring_key": ("DEPLOYER_SCORING_KEY",),
    "scoring_key_secondary": ("DEPLOYER_SCORING_KEY_SECONDARY",),
}


@dataclass(frozen=True)
class Settings:
    entry_script: str
    model_dir: str
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    workers: int = DEFAULT_WORKERS
    scoring_timeout_ms: int = DEFAULT_SCORING_TIMEOUT_MS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    limit_concurrency: int = DEFAULT_LIMIT_CONCURRENCY
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    header_timeout_s: int = DEFAULT_HEADER_TIMEOUT_S
    candidate_port: int | None = None
    instance: str | None = None
    state_dir: str = DEFAULT_STATE_DIR
    # Secrets: out of repr (settings may be logged) and of to_argv (workers inherit the
    # environment they come from).
    scoring_key: str | None = field(default=None, repr=False)
    scoring_key_secondary: str | None = field(default=None, repr=False)

    @property
    def scoring_keys(self) -> tuple[str, ...]:
        """The keys /score accepts; () when it needs none."""
        return tuple(k for k in (self.scoring_key, self.scoring_key_secondary) if k)

    def to_argv(self) -> list[str]:
        """The flags that reproduce these settings (how worker processes get them)."""
        optional = []
        if self.candidate_port is not None:
            optional += ["--candidate-port", str(self.candidate_port)]
        if self.instance:
            optional += ["--instance", self.instance]
        return [
            "--entry-script",
            self.entry_script,
            "--model-dir",
            self.model_dir,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
            "--scoring-timeout-ms",
            str(self.scoring_timeout_ms),
            "--max-request-bytes",
            str(self.max_request_bytes),
            "--limit-concurrency",
            str(self.limit_concurrency),
            "--max-connections",
            str(self.max_connections),
            "--header-timeout",
            str(self.header_timeout_s),
            "--state-dir",
            self.state_dir,
            *optional,
        ]


def build_parser(prog: str = "python -m deployer.serving") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve an Azure ML style entry script (init()/run()) over HTTP.",
        epilog="Each option can also be set by the environment variable named in its help; "
        "a flag wins over the environment.",
    )
    add = parser.add_argument
    # The underscore spellings are azmlinfsrv's, so its command lines keep working.
    add(
        "--entry-script",
        "--entry_script",
        dest="entry_script",
        metavar="PATH",
        help="the scoring script with init() and run() [AZUREML_ENTRY_SCRIPT]",
    )
    add(
        "--model-dir",
        "--model_dir",
        dest="model_dir",
        metavar="DIR",
        help="model directory, exported as AZUREML_MODEL_DIR before init() [AZUREML_MODEL_DIR]",
    )
    add("--host", help=f"address to bind (default {DEFAULT_HOST}) [DEPLOYER_SERVER_HOST]")
    add(
        "--port",
        type=_port,
        help=f"port to bind (default {DEFAULT_PORT}) [DEPLOYER_SERVER_PORT, SERVER_PORT]",
    )
    add(
        "--workers",
        "--worker_count",
        dest="workers",
        type=_positive,
        metavar="N",
        help=f"worker processes (default {DEFAULT_WORKERS}) [WORKER_COUNT]",
    )
    add(
        "--scoring-timeout-ms",
        type=_non_negative,
        metavar="MS",
        help=f"fail a run() that takes longer; 0 disables (default {DEFAULT_SCORING_TIMEOUT_MS}) "
        "[SCORING_TIMEOUT_MS]",
    )
    add(
        "--max-request-bytes",
        type=_positive,
        metavar="BYTES",
        help=f"largest request body accepted (default {DEFAULT_MAX_REQUEST_BYTES}) "
        "[DEPLOYER_MAX_REQUEST_BYTES]",
    )
    add(
        "--limit-concurrency",
        type=_positive,
        metavar="N",
        help="most /score requests one worker holds (running and waiting); more are "
        f"answered 503 with Retry-After at once (default {DEFAULT_LIMIT_CONCURRENCY}) "
        "[DEPLOYER_LIMIT_CONCURRENCY]",
    )
    add(
        "--max-connections",
        type=_positive,
        metavar="N",
        help="most open connections per worker; more are answered 503 and closed "
        f"(default {DEFAULT_MAX_CONNECTIONS}) [DEPLOYER_MAX_CONNECTIONS]",
    )
    add(
        "--header-timeout",
        dest="header_timeout_s",
        type=_positive,
        metavar="SECONDS",
        help="a request line and headers must arrive within this long of their first byte, "
        f"else 408 (default {DEFAULT_HEADER_TIMEOUT_S}) [DEPLOYER_HEADER_TIMEOUT_S]",
    )
    add(
        "--candidate-port",
        type=_port,
        metavar="PORT",
        help="start as a candidate: listen on this private port only, not on --port, until "
        "told to join the service port through the control socket; needs --instance "
        "[DEPLOYER_CANDIDATE_PORT]",
    )
    add(
        "--instance",
        type=_instance,
        metavar="NAME",
        help="open the control socket @deployer-serving/NAME (python -m "
        "deployer.serving.control) [DEPLOYER_INSTANCE]",
    )
    add(
        "--state-dir",
        metavar="DIR",
        help=f"where the promotion marker NAME.promoted is kept (default {DEFAULT_STATE_DIR}) "
        "[DEPLOYER_STATE_DIR]",
    )
    return parser


def parse_settings(
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None = None,
    parser: argparse.ArgumentParser | None = None,
) -> Settings:
    """Resolve the settings; errors exit through ``parser.error`` (status 2)."""
    parser = parser or build_parser()
    environ = os.environ if environ is None else environ
    args = vars(parser.parse_args(argv))
    converters = {
        "port": _port,
        "workers": _positive,
        "scoring_timeout_ms": _non_negative,
        "max_request_bytes": _positive,
        "limit_concurrency": _positive,
        "max_connections": _positive,
        "header_timeout_s": _positive,
        "candidate_port": _port,
        "instance": _instance,
        "scoring_key": _scoring_key,
        "scoring_key_secondary": _scoring_key,
    }
    for dest, names in ENV_NAMES.items():
        if args.get(dest) is not None:
            continue
        for name in names:
            raw = environ.get(name, "").strip()
            if not raw:
                continue
            try:
                args[dest] = converters[dest](raw) if dest in converters else raw
            except argparse.ArgumentTypeError as exc:
                parser.error(f"environment variable {name}: {exc}")
            break
    for dest, flag in (("entry_script", "--entry-script"), ("model_dir", "--model-dir")):
        if not args.get(dest):
            parser.error(f"{flag} (or {ENV_NAMES[dest][0]}) is required")
    if args.get("scoring_key_secondary") and not args.get("scoring_key"):
        parser.error(
            "DEPLOYER_SCORING_KEY_SECONDARY is set but DEPLOYER_SCORING_KEY is not: the "
            "secondary key is the one also accepted during a rotation"
        )
    if args.get("candidate_port") is not None:
        if not args.get("instance"):
            parser.error(
                "--candidate-port (or DEPLOYER_CANDIDATE_PORT) needs --instance (or "
                "DEPLOYER_INSTANCE): a candidate is told to join through its control socket"
            )
        port = DEFAULT_PORT if args.get("port") is None else args["port"]
        if args["candidate_port"] == port != 0:
            parser.error("--candidate-port must differ from the service port (--port)")
    return Settings(**{k: v for k, v in args.items() if v is not None})


def drain_s(scoring_timeout_ms: int) -> int:
    """How long SIGTERM waits for answers in progress: the longest run() allowed, plus a
    margin. With the timeout disabled (0), Azure ML's default of one hour applies. The
    deploy targets derive their stop grace periods from this same figure."""
    timeout_ms = scoring_timeout_ms or DEFAULT_SCORING_TIMEOUT_MS
    return -(-timeout_ms // 1000) + DRAIN_MARGIN_S


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {raw!r}") from None


def _port(raw: str) -> int:
    value = _integer(raw)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port out of range 0-65535: {value}")
    return value


def _positive(raw: str) -> int:
    value = _integer(raw)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {value}")
    return value


def _non_negative(raw: str) -> int:
    value = _integer(raw)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {value}")
    return value


def _instance(raw: str) -> str:
    if not INSTANCE_NAME.fullmatch(raw):
        raise argparse.ArgumentTypeError(
            f"not an instance name (letters, digits, '.', '_', '-'; up to 100): {raw!r}"
        )
    return raw


def key_problem(value: str) -> str | None:
    """Why a scoring key cannot be used, in words that never repeat it; None if it can."""
    if len(value) < MIN_KEY_LENGTH:
        return f"is shorter than {MIN_KEY_LENGTH} characters"
    if not _KEY_CHARS.fullmatch(value):
        return "must be printable ASCII without spaces (it is sent in an HTTP header)"
    if value.startswith("${") and value.endswith("}"):
        return "is an unfilled ${...} placeholder, not a key"
    return None


def _scoring_key(raw: str) -> str:
    problem = key_problem(raw)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"the scoring key {problem}")
    return raw
