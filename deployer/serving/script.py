"""Load the user's entry script and decide how ``run()`` is called, as Azure ML does.

Azure ML inspects ``run()`` once: ``@rawhttp`` means it gets the request object,
an ``inference_schema`` decorator means keyword arguments taken from a JSON object
body, and otherwise it gets the body as a string. A parameter named
``request_headers`` receives the request headers in any mode. We decide the same
things once at load time and build one ``invoke`` callable, so the request path
holds no such checks.
"""

from __future__ import annotations

import enum
import importlib
import importlib.util
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import compat

RawHeaders = list[tuple[bytes, bytes]]
Invoke = Callable[[Any, RawHeaders], Any]
# Azure ML imports the script under this name; inference_schema keys schemas by it.
MODULE_NAME = "entry_module"


class ScriptError(Exception):
    """The entry script cannot be served (missing init/run, unsupported signature)."""


class Mode(enum.Enum):
    STRING = "string"  # run(body_as_str)
    SCHEMA = "schema"  # run(**json_object_body), inference_schema decorated
    RAW = "raw"  # run(AMLRequest), @rawhttp


@dataclass(frozen=True)
class EntryScript:
    path: str
    module: ModuleType
    init: Callable[[], Any]
    run: Callable[..., Any]
    mode: Mode
    params: tuple[inspect.Parameter, ...]  # run()'s inputs, request_headers excluded
    invoke: Invoke


def headers_dict(raw: RawHeaders) -> dict[str, str]:
    """Request headers as Azure ML passes them: ``dict(flask.request.headers)``.

    Werkzeug title-cases names (``X-Request-Id``) and the WSGI server joins repeated
    headers with commas.
    """
    result: dict[str, str] = {}
    for name, value in raw:
        key = name.decode("latin-1").title()
        text = value.decode("latin-1")
        result[key] = f"{result[key]},{text}" if key in result else text
    return result


def load(path: str) -> EntryScript:
    """Import the script (its directory on ``sys.path``, as Azure ML's app root is)."""
    compat.install()
    path = os.path.abspath(path)
    if not os.path.isfile(path):
        raise ScriptError(f"entry script not found: {path}")
    for root in (os.path.dirname(path), os.environ.get("AML_APP_ROOT")):
        if root and root not in sys.path:
            sys.path.append(root)
    spec = importlib.util.spec_from_file_location(MODULE_NAME, path)
    if spec is None or spec.loader is None:
        raise ScriptError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[MODULE_NAME] = module  # so pickle/dataclasses can find the module
    spec.loader.exec_module(module)
    return analyze(path, module)


def analyze(path: str, module: ModuleType) -> EntryScript:
    for name in ("init", "run"):
        if not callable(getattr(module, name, None)):
            raise ScriptError(f"{path} does not define a {name}() function")
    run = module.run
    # Azure ML SDK "driver" scripts forward run() to the real script, minus the
    # arguments; Azure ML calls the inner run() directly, and so do we.
    driver = getattr(module, "driver_module", None)
    if isinstance(driver, ModuleType) and callable(getattr(driver, "run", None)):
        run = driver.run

    params = list(inspect.signature(run).parameters.values())
    allowed = (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    if any(p.kind not in allowed for p in params):
        raise ScriptError("run() cannot accept positional-only arguments, *args, or **kwargs.")
    wants_headers = any(p.name == "request_headers" for p in params)
    params = [p for p in params if p.name != "request_headers"]
    if not params:
        raise ScriptError("run() needs to accept an argument for input data.")

    raw = compat.raw_http_requested()
    schema = _is_schema_decorated(run)
    if raw and schema:
        raise ScriptError("run() cannot be decorated with both @rawhttp and @input_schema")
    mode = Mode.RAW if raw else Mode.SCHEMA if schema else Mode.STRING
    return EntryScript(
        path=path,
        module=module,
        init=module.init,
        run=run,
        mode=mode,
        params=tuple(params),
        invoke=_make_invoke(run, mode, params[0], wants_headers),
    )


def _is_schema_decorated(run: Callable[..., Any]) -> bool:
    if "inference_schema" not in sys.modules:  # a decorated script has imported it
        return False
    schema_util = importlib.import_module("inference_schema.schema_util")  # untyped, optional
    return bool(schema_util.is_schema_decorated(run))


def _make_invoke(
    run: Callable[..., Any], mode: Mode, first: inspect.Parameter, wants_headers: bool
) -> Invoke:
    """One small closure per calling convention; the common one is a positional call."""
    if mode is Mode.SCHEMA:  # arguments by keyword, as Azure ML (decorators read kwargs)
        if wants_headers:
            return lambda kwargs, raw: run(**kwargs, request_headers=headers_dict(raw))
        return lambda kwargs, raw: run(**kwargs)
    name = first.name
    if wants_headers:
        return lambda data, raw: run(**{name: data, "request_headers": headers_dict(raw)})
    if first.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD:
        return lambda data, raw: run(data)
    return lambda data, raw: run(**{name: data})
