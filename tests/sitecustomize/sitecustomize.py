"""Loaded by Python subprocesses of the tests (this folder is on their PYTHONPATH): the
same loopback-only guard as the test process (tests/loopback_guard.py)."""

import importlib.util
import pathlib

_GUARD = pathlib.Path(__file__).resolve().parents[1] / "loopback_guard.py"
_spec = importlib.util.spec_from_file_location("_deployer_loopback_guard", _GUARD)
if _spec is not None and _spec.loader is not None:
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    _module.install()
