"""Server settings: command-line flags over environment variables over defaults.

The environment variable names are the ones Azure ML's inference server reads
(``AZUREML_ENTRY_SCRIPT``, ``AZUREML_MODEL_DIR``, ``WORKER_COUNT``, ``SCORING_TIMEOUT_MS``,
``SERVER_PORT``) plus ours (``DEPLOYER_SERVER_*``, ``DEPLOYER_MAX_REQUEST_BYTES``); the
toolkit's Dockerfile sets them, so the names are part of the contract.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5001
DEFAULT_WORKERS = 1
# Azure ML's default (one hour): a run() that is slow on purpose keeps working after a move.
DEFAULT_SCORING_TIMEOUT_MS = 3_600_000
DEFAULT_MAX_REQUEST_BYTES = 104_857_600

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

    def to_argv(self) -> list[str]:
        """The flags that reproduce these settings (how worker processes get them)."""
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
    return Settings(**{k: v for k, v in args.items() if v is not None})


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
