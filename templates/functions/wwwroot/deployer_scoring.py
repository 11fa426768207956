"""The Azure ML entry script inside the Functions Python worker.

Shipped unchanged into every function app that deployer renders. The entry script is
imported from ``$AZUREML_ENTRY_SCRIPT`` once per worker process and its ``init()`` runs
once, when the function is loaded (the worker's cold start); each invocation then calls
``run()`` with the payload as a string, as Azure ML's scoring server does.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path
from types import ModuleType


def load_entry_script() -> ModuleType:
    """Import the entry script by path and call its ``init()``."""
    setting = os.environ.get("AZUREML_ENTRY_SCRIPT")
    if not setting:
        raise RuntimeError("AZUREML_ENTRY_SCRIPT is not set: the image sets it to the entry script")
    path = Path(setting)
    # Helper modules beside the entry script import as they do under Azure ML.
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location(path.stem, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot import the entry script {path}")
    module = importlib.util.module_from_spec(spec)
    # Registered before it runs, so that pickle and dataclasses can find the module.
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    module.init()
    return module


def score(entry_script: ModuleType, payload: str) -> str:
    """``run(payload)``, serialised as JSON (a str result becomes a JSON string, as in Azure ML)."""
    return json.dumps(entry_script.run(payload))
