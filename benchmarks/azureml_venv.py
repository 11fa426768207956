"""Create (once) the separate venv holding Microsoft's azureml-inference-server-http.

It lives apart from the project's .venv because its pins (Flask, gunicorn, pydantic
settings, opentelemetry...) conflict easily with ours. Used by benchmarks/bench_server.py
and tests/serving (the compatibility suite). Run directly to create it:

    python benchmarks/azureml_venv.py [DIR]      # default: <repo>/.venv-azureml

Idempotent and fast when the venv is complete: a marker file records what was
installed, and nothing is done when it matches.
"""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_DIR = REPO / ".venv-azureml"
# The server we compare with, plus what the example model and test scripts import.
# httptools lets the tests run *our* server in this venv too, next to the
# real azureml package (to check that its AMLRequest/AMLResponse work with us).
REQUIREMENTS = (
    "azureml-inference-server-http==1.5.1",
    "inference-schema==1.8",
    "onnxruntime==1.31.1",
    "numpy==2.4.6",
    "httptools>=0.6",
)
_MARKER = "deployer-azureml-venv.txt"


def ensure(path: Path = DEFAULT_DIR) -> Path:
    """Return the venv's python, creating or completing the venv if needed.

    Raises ``RuntimeError`` with pip's output when the install fails.
    """
    python = path / "bin" / "python"
    marker = path / _MARKER
    wanted = "\n".join(REQUIREMENTS) + "\n"
    if python.exists() and marker.exists() and marker.read_text() == wanted:
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True, clear=path.exists()).create(path)
    done = subprocess.run(
        [
            str(python),
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            *REQUIREMENTS,
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"pip install into {path} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
        )
    marker.write_text(wanted)
    return python


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_DIR))
