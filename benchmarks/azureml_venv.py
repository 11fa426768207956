"""Create (once) the separate venvs holding Microsoft's Azure ML packages.

- ``.venv-azureml``: azureml-inference-server-http (REQUIREMENTS), for
  benchmarks/bench_server.py and tests/serving's compatibility suite.
- ``.venv-azureml-core``: azureml-core, the SDK v1 (AZUREML_CORE), whose
  ``Model.get_model_path`` entry scripts call in init(); for tests/serving/test_model_path.py.

They live apart from the project's .venv because their pins (Flask, gunicorn, pydantic
settings, opentelemetry, azure-mgmt-*...) conflict easily with ours. Run directly to
create one:

    python benchmarks/azureml_venv.py [DIR]          # default: <repo>/.venv-azureml
    python benchmarks/azureml_venv.py --core [DIR]   # default: <repo>/.venv-azureml-core

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
AZUREML_CORE_DIR = REPO / ".venv-azureml-core"
# The last azureml-core (SDK v1) release, which supports Python 3.11 (about 20 s and
# 290 MB to install), and what our server needs to run beside it.
AZUREML_CORE = (
    "azureml-core==1.61.0.post4",
    "httptools>=0.6",
)
_MARKER = "deployer-azureml-venv.txt"


def ensure(path: Path = DEFAULT_DIR, requirements: tuple[str, ...] = REQUIREMENTS) -> Path:
    """Return the python of the venv at ``path`` holding ``requirements``, creating or
    completing the venv if needed.

    Raises ``RuntimeError`` with pip's output when the install fails.
    """
    python = path / "bin" / "python"
    marker = path / _MARKER
    wanted = "\n".join(requirements) + "\n"
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
            *requirements,
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
    core = "--core" in sys.argv[1:]
    paths = [arg for arg in sys.argv[1:] if arg != "--core"]
    default, requirements = (
        (AZUREML_CORE_DIR, AZUREML_CORE) if core else (DEFAULT_DIR, REQUIREMENTS)
    )
    print(ensure(Path(paths[0]) if paths else default, requirements))
