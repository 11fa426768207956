"""``deployer test -t TARGET --local`` for a ``functions`` target: the rendered function app,
run in this process with the real ``azure-functions`` binding types.

The target is rendered as for its image and written to a temporary folder laid out as
the image lays it out: the app (``wwwroot``), the entry script and the model, with the
image's settings (``AZUREML_ENTRY_SCRIPT``, ``AZUREML_MODEL_DIR``, ``AML_APP_ROOT`` and
``environment.variables``) in the environment. ``function_app.py`` is imported as the
Python worker indexes it (the entry script's ``init()`` runs then, once), its one function
found with ``FunctionApp.get_functions()``, and each of deploy.yaml's test requests sent
through the trigger's own type:

* HTTP: a ``func.HttpRequest`` (method, URL on the route, headers, query, body); the
  ``func.HttpResponse`` is encoded by azure-functions' own HTTP converter (which sets
  Content-Type as the worker does) and judged as ``deployer test`` judges an answer;
* blob: the request's body is the input blob, a ``func.blob.InputStream`` named by the
  trigger's path pattern (its binding expressions bound to the test's name); the output
  blob the function sets is the answer's body. With Azurite (:class:`BlobStore`), the
  input is uploaded to the emulator and read back through the app's binding settings (the
  connection string in the app setting ``connection`` names, the container and path
  pattern), and the output written there and read back;
* Service Bus: a ``func.ServiceBusMessage`` with the body and Content-Type; the message
  set on the output queue binding is the answer's body.

An event trigger has no HTTP status: a function that returns is a 200, one that raises
answers the status the scoring core gave (500 when run() failed), and its headers and
content type are not compared (an output blob or message has none to compare).
Nothing here is needed by ``deployer validate`` or a render: azure-functions (and, for
Azurite, azure-storage-blob) are imported when a local test runs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from http.client import HTTPMessage
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from deployer.config.model import DeployConfig, ScoringTest
from deployer.errors import UserError
from deployer.image import APP_DIR, entry_script_in_image, model_dir
from deployer.targets.functions.render import FUNCTION_APP, SCRIPT_ROOT, fill_route
from deployer.targets.functions.schema import Config, route_parameters
from deployer.verify import RequestResult, TestRun, failed_request
from deployer.verify_answers import Answer, expectation_failures
from deployer.verify_requests import PreparedRequest, RequestFileError, prepare_request

# Where the Functions host serves HTTP functions: https://<app>/api/<route>.
LOCAL_HOST = "http://localhost:7071"
HTTP_PREFIX = "api"
APP_MODULE = "function_app"
# The modules the app and the entry script add to the process, forgotten after a run.
APP_MODULES = (APP_MODULE, "deployer_scoring", "entry_module")
# Azure's Python worker writes blobs and queue messages without a content type of ours.
# Azurite's well-known development account (public, the same on every machine).
AZURITE_DEFAULT = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/"
    "KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1;"
)
EVENT_NOTE = "an event trigger has no headers: status, json and body_sha256 are compared"


class LocalTestError(UserError):
    """The function app cannot be loaded or is not what the target describes."""


@dataclass(frozen=True)
class LoadedFunction:
    """The app's one function, as ``FunctionApp.get_functions()`` indexes it."""

    name: str
    trigger: dict[str, Any]  # the trigger binding, as the worker sends it to the host
    outputs: list[dict[str, Any]]  # the output bindings
    call: Callable[..., Any]
    module: Any  # the imported function_app module

    @property
    def trigger_type(self) -> str:
        return str(self.trigger["type"])


def _require_azure_functions() -> Any:
    try:
        import azure.functions as func
    except ImportError as exc:
        raise LocalTestError(
            "deployer test --local runs the function app with the azure-functions package: "
            "pip install azure-functions"
        ) from exc
    return func


def container_layout(config: DeployConfig, inputs: Any) -> dict[str, str]:
    """The image's folders and where the build context holds them: container path ->
    context folder. The deepest container path holding a path wins."""
    return {SCRIPT_ROOT: "wwwroot", APP_DIR: "app", model_dir(inputs): "model"}


def local_path(root: Path, layout: Mapping[str, str], container_path: str) -> Path:
    """Where a path inside the image is in the written build context at ``root``."""
    holders = [dest for dest in layout if f"{container_path}/".startswith(f"{dest}/")]
    if not holders:
        raise LocalTestError(f"{container_path} is not copied into the image")
    dest = max(holders, key=len)
    relative = PurePosixPath(container_path).relative_to(dest)
    return root / layout[dest] / relative


def image_environment(config: DeployConfig, inputs: Any, root: Path) -> dict[str, str]:
    """The settings the image's Dockerfile sets, with paths into ``root``."""
    layout = container_layout(config, inputs)
    models = local_path(root, layout, model_dir(inputs))
    models.mkdir(parents=True, exist_ok=True)  # the image has the folder even when empty
    return {
        **config.environment.variables,
        "AzureWebJobsScriptRoot": str(local_path(root, layout, SCRIPT_ROOT)),
        "AML_APP_ROOT": str(local_path(root, layout, APP_DIR)),
        "AZUREML_ENTRY_SCRIPT": str(local_path(root, layout, entry_script_in_image(inputs))),
        "AZUREML_MODEL_DIR": str(models),
        "FUNCTIONS_WORKER_RUNTIME": "python",
    }


@contextmanager
def _settings(env: Mapping[str, str], script_root: Path) -> Iterator[None]:
    """``env`` in os.environ and the script root on sys.path, as the worker has them;
    both restored after, and the app's modules forgotten (as a new worker process would)."""
    saved = {name: os.environ.get(name) for name in env}
    os.environ.update(env)
    sys.path.insert(0, str(script_root))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if str(script_root) in sys.path:
            sys.path.remove(str(script_root))
        forget_app()


def forget_app() -> None:
    """Forget what the app and its entry script left in this process: their modules,
    the @rawhttp flag and inference-schema's schemas of ``entry_module.run``."""
    from deployer.serving import compat
    from deployer.serving.script import MODULE_NAME

    for name in APP_MODULES:
        sys.modules.pop(name, None)
    for name in compat.RAW_FLAG_MODULES:
        module = sys.modules.get(name)
        if hasattr(module, "_rawHttpRequested"):
            module._rawHttpRequested = False  # type: ignore[union-attr]
    schema_util = sys.modules.get("inference_schema.schema_util")
    if schema_util is not None:
        for attr in ("__functions_schema__", "__versions__"):
            registry = getattr(schema_util, attr, {})
            for key in [key for key in registry if key.startswith(f"{MODULE_NAME}.")]:
                del registry[key]


def _not_auth_warning(record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Auth level is not applied")


_NO_AUTH_WARNING = _not_auth_warning


def load_function(script_root: Path) -> LoadedFunction:
    """Import ``function_app.py`` from ``script_root`` and index its one function."""
    func = _require_azure_functions()
    path = script_root / FUNCTION_APP
    spec = importlib.util.spec_from_file_location(APP_MODULE, path)
    if spec is None or spec.loader is None:
        raise LocalTestError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[APP_MODULE] = module
    spec.loader.exec_module(module)
    apps = [v for v in vars(module).values() if isinstance(v, func.FunctionApp)]
    # get_functions() warns that auth levels do not apply to an app without HTTP
    # functions: true, and nothing for the user to act on.
    logging.getLogger().addFilter(_NO_AUTH_WARNING)
    if len(apps) != 1:
        raise LocalTestError(f"{path} defines {len(apps)} FunctionApp objects, not one")
    try:
        functions = apps[0].get_functions()
    finally:
        logging.getLogger().removeFilter(_NO_AUTH_WARNING)
    if len(functions) != 1:
        raise LocalTestError(f"{path} defines {len(functions)} functions, not one")
    (function,) = functions
    # The bindings as the worker reports them to the host when it indexes the app.
    bindings = json.loads(function.get_function_json())["bindings"]
    triggers = [b for b in bindings if str(b["type"]).endswith("Trigger")]
    if len(triggers) != 1:
        raise LocalTestError(f"function {function.get_function_name()} has no single trigger")
    outputs = [b for b in bindings if str(b["direction"]).upper() == "OUT"]
    return LoadedFunction(
        str(function.get_function_name()),
        triggers[0],
        outputs,
        function.get_user_function(),
        module,
    )


# --- blob paths --------------------------------------------------------------------

_EXPRESSION = re.compile(r"\{([^{}]+)\}")


def resolve_path(pattern: str, values: Mapping[str, str]) -> str:
    """A binding path with its {expressions} bound: names from ``values``, and the
    host's own ``{rand-guid}`` and ``{DateTime}``."""

    def value(match: re.Match[str]) -> str:
        name = match[1]
        if name in values:
            return values[name]
        if name.lower() == "rand-guid":
            return str(uuid.uuid4())
        if name.lower() == "datetime":
            return datetime.now(UTC).strftime("%Y-%m-%dT%H-%M-%SZ")
        raise LocalTestError(f"binding expression {{{name}}} in {pattern!r} has no value")

    return _EXPRESSION.sub(value, pattern)


def blob_values(pattern: str, test_name: str) -> dict[str, str]:
    """The trigger path's expressions, each bound to the test's name (the input blob of
    test ``two-rows`` for ``input/{name}.json`` is ``input/two-rows.json``)."""
    return {name: test_name for name in _EXPRESSION.findall(pattern) if name.lower() != "rand-guid"}


def split_blob_path(path: str) -> tuple[str, str]:
    container, _, blob = path.partition("/")
    return container, blob


class BlobStore:
    """Blob storage reached through a connection string, as the Functions host reaches
    the account its binding's ``connection`` app setting names (Azurite, locally)."""

    def __init__(self, connection_string: str):
        try:
            from azure.storage.blob import BlobServiceClient
        except ImportError as exc:
            raise LocalTestError(
                "--azurite stores the blobs with azure-storage-blob: pip install azure-storage-blob"
            ) from exc
        self.service = BlobServiceClient.from_connection_string(connection_string)

    def upload(self, path: str, data: bytes) -> None:
        container, blob = split_blob_path(path)
        client = self.service.get_container_client(container)
        if not client.exists():
            client.create_container()
        client.upload_blob(blob, data, overwrite=True)

    def download(self, path: str) -> tuple[bytes, str, Mapping[str, Any]]:
        """The blob's content, URL and properties; raises LocalTestError when absent."""
        from azure.core.exceptions import ResourceNotFoundError

        container, blob = split_blob_path(path)
        client = self.service.get_blob_client(container, blob)
        try:
            downloader = client.download_blob()
        except ResourceNotFoundError as exc:
            raise LocalTestError(f"no blob {path} in {self.service.url}") from exc
        return downloader.readall(), client.url, dict(downloader.properties)

    def delete(self, path: str) -> None:
        """Remove the blob if it is there (a previous run's output)."""
        container, blob = split_blob_path(path)
        if self.service.get_container_client(container).exists():
            client = self.service.get_blob_client(container, blob)
            if client.exists():
                client.delete_blob()

    def exists(self, path: str) -> bool:
        container, blob = split_blob_path(path)
        return bool(self.service.get_blob_client(container, blob).exists())


# --- running the tests ---------------------------------------------------------------


@dataclass(frozen=True)
class EventAnswer:
    status: int
    body: bytes
    headers: HTTPMessage


class _Out:
    """An output binding (``func.Out``) that keeps what the function sets."""

    def __init__(self) -> None:
        self.value: Any = None
        self.was_set = False

    def set(self, val: Any) -> None:
        self.value, self.was_set = val, True

    def get(self) -> Any:
        return self.value


def azurite_connection(connection_string: str | None) -> str:
    """The Azurite connection string ``--azurite`` uses: the app setting's value when it
    is set (it must reach Azurite on this machine), else Azurite's default account on
    127.0.0.1:10000."""
    if not connection_string:
        return AZURITE_DEFAULT
    endpoint = re.search(r"BlobEndpoint=(https?://[^;/]+)", connection_string)
    if connection_string.strip().rstrip(";") == "UseDevelopmentStorage=true":
        return AZURITE_DEFAULT
    host = urlsplit(endpoint[1]).hostname if endpoint else None
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise LocalTestError(
            "--azurite writes test blobs to Azurite on this machine: the connection "
            "string has no BlobEndpoint on 127.0.0.1 or localhost"
        )
    return connection_string


def run_local_tests(
    config: DeployConfig,
    config_path: Path,
    target_name: str,
    azurite: str | None = None,
    work_dir: Path | None = None,
) -> TestRun:
    """Render ``target_name``, load its function app here and send deploy.yaml's tests
    through the trigger's types. ``azurite``: a connection string to Azurite, for a blob
    target's input and output blobs; it becomes the binding's ``connection`` app setting."""
    from deployer.plan import make_plan

    target = config.targets[target_name]
    if not isinstance(target, Config):
        raise LocalTestError(
            f"--local runs a function app: target {target_name!r} is not a functions target"
        )
    _require_azure_functions()
    plan = make_plan(config, config_path, [target_name])
    context = plan.images[plan.targets[0].image.repository]
    with tempfile.TemporaryDirectory(prefix="deployer-functions-", dir=work_dir) as tmp:
        root = Path(tmp)
        context.write_to(root)
        env = image_environment(config, plan.inputs, root)
        blob_store = None
        if azurite is not None:
            if target.blob is None:
                raise LocalTestError(f"--azurite is for blob triggers: {target_name!r} has none")
            env[target.blob.connection] = azurite
            blob_store = BlobStore(azurite)
        script_root = Path(env["AzureWebJobsScriptRoot"])
        with _settings(env, script_root):
            function = load_function(script_root)
            base_dir = config_path.resolve().parent
            results = [
                _run_one(function, target, test, base_dir, blob_store)
                for test in config.tests.requests
            ]
    where = "Azurite" if blob_store is not None else "in-process"
    return TestRun(
        uri=f"function {function.name} ({function.trigger_type}, {where})", results=results
    )


def _run_one(
    function: LoadedFunction,
    target: Config,
    test: ScoringTest,
    base_dir: Path,
    blob_store: BlobStore | None,
) -> RequestResult:
    try:
        request = prepare_request(test, base_dir)
    except RequestFileError as exc:
        return failed_request(test, str(exc))
    started = time.perf_counter()
    try:
        if function.trigger_type == "httpTrigger":
            values = target.http.route_values if target.http else {}
            answer, compared = _http(function, request, values), test
        elif function.trigger_type == "blobTrigger":
            answer, compared = _blob(function, test, request, blob_store), _event_test(test)
        elif function.trigger_type == "serviceBusTrigger":
            # Without an output queue the answer goes nowhere: only its status is seen.
            seen = any(b["type"] == "serviceBus" for b in function.outputs)
            answer, compared = _service_bus(function, request), _event_test(test, seen)
        else:
            raise LocalTestError(f"--local cannot send a {function.trigger_type} event")
    except LocalTestError as exc:
        return failed_request(test, str(exc), request.method)
    total_ms = (time.perf_counter() - started) * 1000
    import hashlib

    judged = Answer(
        answer.status,
        answer.headers,
        answer.body,
        len(answer.body),
        hashlib.sha256(answer.body).hexdigest(),
        total_ms,
        total_ms,
    )
    failures = expectation_failures(compared, judged)
    return RequestResult(
        test.name,
        not failures,
        answer.status,
        test.expect.status,
        total_ms,
        "; ".join(failures),
        received_bytes=judged.size,
        method=request.method,
        failures=tuple(failures),
    )


def _event_test(test: ScoringTest, body_seen: bool = True) -> ScoringTest:
    """The test without header and content-type expectations (EVENT_NOTE), and without
    body expectations when the answer is not written anywhere."""
    update: dict[str, Any] = {"headers": {}, "content_type": None}
    if not body_seen:
        update |= {"json_": None, "body_sha256": None}
    expect = test.expect.model_copy(update=update)
    return test.model_copy(update={"expect": expect})


def _headers(pairs: Mapping[str, str] | list[tuple[str, str]]) -> HTTPMessage:
    message = HTTPMessage()
    for name, value in pairs.items() if isinstance(pairs, Mapping) else pairs:
        message[name] = value
    return message


def _http(
    function: LoadedFunction, request: PreparedRequest, route_values: dict[str, str]
) -> EventAnswer:
    func = _require_azure_functions()
    from azure.functions.http import HttpResponseConverter

    route = str(function.trigger.get("route") or function.name)
    values = {name: route_values[name] for name in route_parameters(route) if name in route_values}
    path = fill_route(route, values)
    url = f"{LOCAL_HOST}/{HTTP_PREFIX}/{path}" + (f"?{request.query}" if request.query else "")
    req = func.HttpRequest(
        method=request.method,
        url=url,
        headers=request.headers,
        params=dict(parse_qsl(request.query, keep_blank_values=True)),
        route_params=values,  # as the host binds them: the values, not encoded
        body=request.body or b"",
    )
    response = function.call(**{function.trigger["name"]: req})
    if not isinstance(response, func.HttpResponse):
        raise LocalTestError(
            f"the function returned {type(response).__name__}, not an HttpResponse"
        )
    # What the worker sends the host: azure-functions' own converter sets Content-Type.
    datum = HttpResponseConverter.encode(response, expected_type=None).value
    headers = _headers([(name, d.value) for name, d in datum["headers"].items()])
    return EventAnswer(int(datum["status_code"].value), datum["body"].value, headers)


def _event_outcome(call: Callable[[], None], output: _Out | None) -> EventAnswer:
    """A 200 with the output's body when the function returns; when it raises, the
    scoring core's answer (deployer_scoring.ScoringFailed), or a 500."""
    try:
        call()
    except Exception as exc:  # the function's failure is the test's answer
        answer = getattr(exc, "answer", None)
        if answer is not None:
            return EventAnswer(answer.status, answer.body, _headers(answer.headers))
        return EventAnswer(500, str(exc).encode(), _headers({}))
    if output is None:
        return EventAnswer(200, b"", _headers({}))
    if not output.was_set:
        raise LocalTestError("the function returned without setting its output")
    value = output.value
    return EventAnswer(
        200, value.encode() if isinstance(value, str) else bytes(value), _headers({})
    )


def _blob(
    function: LoadedFunction,
    test: ScoringTest,
    request: PreparedRequest,
    store: BlobStore | None,
) -> EventAnswer:
    func = _require_azure_functions()
    (output,) = [b for b in function.outputs if b["type"] == "blob"]
    values = blob_values(function.trigger["path"], test.name)
    input_path = resolve_path(function.trigger["path"], values)
    output_path = resolve_path(output["path"], values)
    body = request.body or b""
    uri = f"{LOCAL_HOST}/devstoreaccount1/{input_path}"
    properties: Mapping[str, Any] | None = None
    if store is not None:
        store.delete(output_path)
        store.upload(input_path, body)
        # Read back as the host reads it: through the connection the binding names.
        body, uri, properties = _store_for(function.trigger).download(input_path)
    blob = func.blob.InputStream(
        data=body,
        name=input_path,
        uri=uri,
        length=len(body),
        blob_properties=dict(properties) if properties is not None else None,
    )
    out = _Out()
    answer = _event_outcome(
        lambda: function.call(**{function.trigger["name"]: blob, output["name"]: out}), out
    )
    if store is None:
        return answer
    if out.was_set:
        _store_for(output).upload(output_path, _as_bytes(out.value))
    if answer.status != 200:
        if store.exists(output_path):
            raise LocalTestError(f"the function failed, yet {output_path} was written")
        return answer
    content, _, _ = store.download(output_path)  # the test reads the output blob back
    return EventAnswer(200, content, answer.headers)


def _as_bytes(value: Any) -> bytes:
    return value.encode() if isinstance(value, str) else bytes(value)


def _store_for(binding: Mapping[str, Any]) -> BlobStore:
    """The account a binding reaches: its ``connection`` app setting's connection string."""
    setting = str(binding["connection"])
    connection_string = os.environ.get(setting)
    if not connection_string:
        raise LocalTestError(f"the app setting {setting} (the binding's connection) is not set")
    return BlobStore(connection_string)


def _service_bus(function: LoadedFunction, request: PreparedRequest) -> EventAnswer:
    func = _require_azure_functions()
    content_type = next(
        (v for k, v in request.headers.items() if k.lower() == "content-type"), None
    )
    message = func.ServiceBusMessage(body=request.body or b"", content_type=content_type)
    outputs = [b for b in function.outputs if b["type"] == "serviceBus"]
    out = _Out() if outputs else None
    kwargs: dict[str, Any] = {function.trigger["name"]: message}
    if outputs:
        kwargs[outputs[0]["name"]] = out
    return _event_outcome(lambda: function.call(**kwargs), out)
