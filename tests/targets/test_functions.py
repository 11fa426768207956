"""The functions target: a function app that scores with the entry script, and its app.json.

The rendered app is written to disk and its handler imported and called with the real
``azure.functions`` types, as Azure documents unit-testing functions; function.json is
checked against the handler the way the Python worker checks it when it loads a function.
"""

from __future__ import annotations

import inspect
import itertools
import json
import logging
import re
import shutil
import sys
import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import azure.functions as func
import pytest
from azure.functions import meta

from deployer.config.loader import load_config
from deployer.plan import make_plan
from deployer.serving.invocation import MSG_RUN_FAILED
from deployer.targets.functions import local
from deployer.targets.functions.render import function_timeout
from tests.conftest import EXAMPLE, REPO

TARGET = "batch"
BLOB_SETTINGS = (
    'trigger: blob, blob: {input_path: "input/{name}.json", '
    'output_path: "output/{name}_out.json", connection: TriggerConnectionString}'
)
HTTP = (BLOB_SETTINGS, 'trigger: http, http: {auth_level: anonymous, route: "models/diabetes"}')
SERVICE_BUS = (
    BLOB_SETTINGS,
    "trigger: service_bus, service_bus: "
    "{queue: requests, connection: ServiceBusConnection, output_queue: predictions}",
)
SERVICE_BUS_WITHOUT_OUTPUT = (
    BLOB_SETTINGS,
    "trigger: service_bus, service_bus: {queue: requests, connection: ServiceBusConnection}",
)
VARIANTS = {
    "blob": (),
    "http": (HTTP,),
    "service_bus": (SERVICE_BUS,),
    "service_bus_without_output": (SERVICE_BUS_WITHOUT_OUTPUT,),
}

EXPECTED = json.loads((EXAMPLE / "train" / "expected.json").read_text())
REQUESTS = {
    request.name: json.dumps(request.json_)
    for request in load_config(EXAMPLE / "deploy.yaml").tests.requests
}
# The host's rule for binding names (Microsoft.Azure.WebJobs.Script BindingMetadata).
BINDING_NAME = re.compile(r"^([a-zA-Z][a-zA-Z0-9]{0,127}|\$return)$")


@dataclass(frozen=True)
class RenderedApp:
    """One rendering of the functions target, its image's build context written to ``root``."""

    root: Path
    function: str
    files: dict[str, str]  # the generated text files of the build context
    artifacts: dict[str, str]
    image: str
    model_version: str

    def json(self, path: str) -> Any:
        return json.loads(self.files[path])


def _render(config_path: Path, out: Path) -> RenderedApp:
    plan = make_plan(load_config(config_path), config_path, [TARGET])
    target = plan.targets[0]
    context = plan.images[target.image.repository]
    context.write_to(out)
    function = json.loads(target.artifacts["app.json"])["function"]["name"]
    texts = {dest: text for dest, text in context.files.items() if isinstance(text, str)}
    return RenderedApp(
        out, function, texts, target.artifacts, str(target.image), plan.inputs.model_version
    )


@pytest.fixture
def render(tmp_path: Path) -> Callable[..., RenderedApp]:
    """Render the example's batch target from a copy whose deploy.yaml has ``replacements``.

    Each call copies and writes to folders of its own, so a test can render variants.
    """
    calls = itertools.count()

    def make(*replacements: tuple[str, str]) -> RenderedApp:
        folder = tmp_path / f"render-{next(calls)}"
        repo = folder / "model-repo"
        shutil.copytree(EXAMPLE, repo, ignore=shutil.ignore_patterns("__pycache__", "out"))
        text = (repo / "deploy.yaml").read_text()
        for old, new in replacements:
            assert old in text, f"{old!r} is not in the example's deploy.yaml"
            text = text.replace(old, new)
        (repo / "deploy.yaml").write_text(text)
        return _render(repo / "deploy.yaml", folder / "image")

    return make


def _container_paths(app: RenderedApp) -> dict[str, Path]:
    """The Dockerfile's AZUREML_* settings and script root, as paths in the written context."""
    dockerfile = app.files["Dockerfile"]
    copies = {
        dest.rstrip("/"): src.rstrip("/")
        for src, dest in re.findall(r"^COPY (\S+) (\S+)$", dockerfile, re.MULTILINE)
    }

    def local(container_path: str) -> Path:
        """Where a path inside the image comes from: the deepest COPY destination holding it."""
        holders = [dest for dest in copies if f"{container_path}/".startswith(f"{dest}/")]
        dest = max(holders, key=len)
        return app.root / copies[dest] / container_path[len(dest) :].lstrip("/")

    settings = dict(re.findall(r"(AZUREML_\w+|AzureWebJobsScriptRoot)=\"?([^\"\s]+)", dockerfile))
    return {name: local(value) for name, value in settings.items()}


@pytest.fixture
def load_handler(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[RenderedApp], Any]]:
    """Import a rendered handler as the Functions worker does, with the image's settings."""
    roots: list[Path] = []

    def load(app: RenderedApp) -> Any:
        paths = _container_paths(app)
        monkeypatch.setenv("AZUREML_ENTRY_SCRIPT", str(paths["AZUREML_ENTRY_SCRIPT"]))
        monkeypatch.setenv("AZUREML_MODEL_DIR", str(paths["AZUREML_MODEL_DIR"]))
        # The worker puts AzureWebJobsScriptRoot on sys.path; undone (all of sys.path) after.
        monkeypatch.syspath_prepend(str(paths["AzureWebJobsScriptRoot"]))
        roots.append(app.root)
        # Indexed as the worker indexes a v2 app: function_app.py imported, get_functions().
        function = local.load_function(paths["AzureWebJobsScriptRoot"])
        assert function.name == app.function
        return SimpleNamespace(
            main=function.call, ENTRY_SCRIPT=function.module.ENTRY_SCRIPT, function=function
        )

    yield load
    # As if the next test ran in a new worker process: forget the rendered app's modules,
    # and what the entry script registered in process-wide state (the @rawhttp flag, and
    # inference-schema's schemas, keyed by module and function name: entry_module.run).
    for name, module in list(sys.modules.items()):
        source = getattr(module, "__file__", None) or ""
        if any(source.startswith(str(root)) for root in roots):
            del sys.modules[name]
    local.forget_app()


class OutputBinding(func.Out[str]):
    """An output binding that keeps what the function sets."""

    def __init__(self) -> None:
        self.value: str | None = None

    def set(self, val: str) -> None:
        self.value = val

    def get(self) -> str:
        assert self.value is not None, "the function set no output"
        return self.value


# --- the handlers, called -------------------------------------------------------------


@pytest.mark.parametrize("request_name", ["two-rows", "dataset-rows"])
def test_blob_function_writes_the_predictions_to_the_output_blob(
    render: Callable[..., RenderedApp],
    load_handler: Callable[[RenderedApp], Any],
    request_name: str,
) -> None:
    handler = load_handler(render())
    blob = func.blob.InputStream(
        data=REQUESTS[request_name].encode(), name=f"input/{request_name}.json"
    )
    output = OutputBinding()
    handler.main(blob, output)
    assert json.loads(output.get()) == pytest.approx(EXPECTED[request_name], rel=1e-6)


def test_blob_function_logs_and_raises_when_run_fails_so_the_host_retries(
    render: Callable[..., RenderedApp],
    load_handler: Callable[[RenderedApp], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = load_handler(render())
    output = OutputBinding()
    with caplog.at_level(logging.ERROR), pytest.raises(Exception, match="answered 500"):
        handler.main(
            func.blob.InputStream(data=REQUESTS["bad-input"].encode(), name="input/bad.json"),
            output,
        )
    assert output.value is None
    assert "scoring blob input/bad.json failed" in caplog.text
    assert "10 numbers" in caplog.text, "run()'s traceback is in the log"


def test_http_function_answers_the_predictions_as_json(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    handler = load_handler(render(HTTP))
    for name in ("two-rows", "dataset-rows"):
        response = handler.main(_post(REQUESTS[name].encode()))
        assert response.status_code == 200
        assert response.mimetype == "application/json"
        assert json.loads(response.get_body()) == pytest.approx(EXPECTED[name], rel=1e-6)
        assert response.headers["x-ms-run-function-failed"] == "False"
        assert response.headers["x-request-id"]


def test_http_function_answers_500_with_the_servers_generic_message_when_run_fails(
    render: Callable[..., RenderedApp],
    load_handler: Callable[[RenderedApp], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    handler = load_handler(render(HTTP))
    with caplog.at_level(logging.ERROR):
        response = handler.main(_post(REQUESTS["bad-input"].encode()))
    assert response.status_code == 500
    assert response.mimetype == "application/json"
    assert json.loads(response.get_body()) == {"message": MSG_RUN_FAILED}
    assert b"10 numbers" not in response.get_body(), "the exception's text stays in the log"
    assert response.headers["x-ms-run-function-failed"] == "True"
    assert "10 numbers" in caplog.text


def test_http_function_answers_400_to_a_body_that_is_not_utf8(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    handler = load_handler(render(HTTP))
    response = handler.main(_post(b"\xff\xfe{}"))
    assert response.status_code == 400
    assert json.loads(response.get_body())["message"].startswith("Input cannot be decoded as UTF-8")


def test_entry_script_is_imported_and_initialised_once_per_worker(
    render: Callable[..., RenderedApp],
    load_handler: Callable[[RenderedApp], Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    handler = load_handler(render(HTTP))
    entry_script = handler.ENTRY_SCRIPT.module
    assert entry_script.session is not None, "init() has not run at import"
    assert sys.modules["entry_module"] is entry_script, "imported under Azure ML's name"
    inits: list[None] = []
    monkeypatch.setattr(entry_script, "init", lambda: inits.append(None))
    for _ in range(3):
        assert handler.main(_post(REQUESTS["two-rows"].encode())).status_code == 200
    assert inits == []


def test_service_bus_function_returns_the_predictions_for_the_output_queue(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    handler = load_handler(render(SERVICE_BUS))
    output = OutputBinding()
    handler.main(func.ServiceBusMessage(body=REQUESTS["dataset-rows"].encode()), output)
    assert json.loads(output.get()) == pytest.approx(EXPECTED["dataset-rows"], rel=1e-6)
    with pytest.raises(Exception, match="answered 500"):
        handler.main(func.ServiceBusMessage(body=REQUESTS["bad-input"]), OutputBinding())


def test_a_str_result_is_sent_as_a_json_string(
    script_app: Callable[[str], RenderedApp],
    load_handler: Callable[[RenderedApp], Any],
) -> None:
    handler = load_handler(
        script_app("def init():\n    pass\n\n\ndef run(raw_data):\n    return raw_data.upper()\n")
    )
    response = handler.main(_post(b'say "hi"'))
    assert response.get_body() == b'"SAY \\"HI\\""'


# The script styles the scoring server serves, through the Functions handler: each used to
# fail there (run() was called with the body as a string, whatever the script).
SCHEMA_SCRIPT = (REPO / "tests" / "serving" / "scripts" / "schema.py").read_text()
RAW_SCRIPT = """
import json
from azureml.contrib.services.aml_request import AMLRequest, rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    if request.method == "GET":
        return AMLResponse(json.dumps(request.args.getlist("x")), 200, json_str=False)
    answer = AMLResponse(request.get_data()[::-1], 201)
    answer.mimetype = "application/octet-stream"
    answer.headers["X-Seen"] = request.headers.get("X-Twice", "")
    return answer
"""
STREAM_SCRIPT = """
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


def run(data):
    return AMLResponse((f"{i}\\n" for i in range(3)), 200, {"Content-Type": "text/plain"})
"""


@pytest.fixture
def script_app(example_copy: Callable[..., Path], tmp_path: Path) -> Callable[[str], RenderedApp]:
    """The example's HTTP function app with ``score.py`` replaced by ``source``."""

    def make(source: str) -> RenderedApp:
        config_path = example_copy(HTTP)
        (config_path.parent / "score.py").write_text(source)
        return _render(config_path, tmp_path / "image")

    return make


def test_an_input_schema_script_gets_keyword_arguments_as_from_the_server(
    script_app: Callable[[str], RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    handler = load_handler(script_app(SCHEMA_SCRIPT))
    response = handler.main(_post(b'{"data": [[1, 2, 3]], "scale": 2}'))
    assert (response.status_code, json.loads(response.get_body())) == (200, [12.0])
    missing = handler.main(_post(b'{"scale": 2}'))
    assert missing.status_code == 400
    assert json.loads(missing.get_body()) == {
        "message": "A value is not provided for the 'data' parameter."
    }


def test_a_rawhttp_script_gets_the_request_and_its_response_is_sent_as_it_is(
    script_app: Callable[[str], RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    handler = load_handler(script_app(RAW_SCRIPT))  # used to fail: No module named 'azureml'
    request = func.HttpRequest(
        method="POST",
        url="http://127.0.0.1/api/models/diabetes",
        headers={"X-Twice": "one,two", "Content-Type": "application/octet-stream"},
        body=b"\x00\x01\x02",
    )
    response = handler.main(request)
    assert (response.status_code, response.get_body()) == (201, b"\x02\x01\x00")
    assert response.mimetype == "application/octet-stream"
    assert response.headers["X-Seen"] == "one,two"
    query = func.HttpRequest(
        method="GET", url="http://127.0.0.1/api/models/diabetes?x=1&x=2", body=b""
    )
    assert json.loads(handler.main(query).get_body()) == ["1", "2"]


def test_a_streamed_response_is_sent_whole_by_the_http_response(
    script_app: Callable[[str], RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    handler = load_handler(script_app(STREAM_SCRIPT))
    response = handler.main(_post(b"{}"))
    assert (response.status_code, response.get_body()) == (200, b"0\n1\n2\n")
    assert response.mimetype == "text/plain"


def _post(body: bytes) -> func.HttpRequest:
    return func.HttpRequest(
        method="POST",
        url="http://127.0.0.1/api/models/diabetes",
        headers={"Content-Type": "application/json"},
        body=body,
    )


# --- the function app, as the Python worker indexes it (v2 programming model) ---------


def _index(app: RenderedApp, load_handler: Callable[[RenderedApp], Any]) -> dict[str, Any]:
    """The one function's trigger and output bindings, as the worker reports them to the
    host (FunctionApp.get_functions(), then each function's JSON)."""
    function = load_handler(app).function
    return {"trigger": function.trigger, "outputs": function.outputs, "call": function.call}


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_binding_matches_the_functions_parameters_as_the_worker_checks(
    render: Callable[..., RenderedApp],
    load_handler: Callable[[RenderedApp], Any],
    variant: str,
) -> None:
    app = render(*VARIANTS[variant])
    assert set(app.files) >= {"wwwroot/function_app.py", "wwwroot/host.json"}
    assert not [f for f in app.files if f.endswith("function.json")], "no v1 layout"
    indexed = _index(app, load_handler)
    bindings = [indexed["trigger"], *indexed["outputs"]]
    params = inspect.signature(indexed["call"]).parameters
    hints = typing.get_type_hints(indexed["call"])
    registry = meta.get_binding_registry()
    assert indexed["trigger"]["direction"] == "IN"
    assert registry.get(indexed["trigger"]["type"]).has_trigger_support()
    assert set(params) == {b["name"] for b in bindings if b["name"] != "$return"}
    for binding in bindings:
        assert BINDING_NAME.match(binding["name"]), binding["name"]
        converter = registry.get(binding["type"])
        assert converter is not None, f"azure.functions knows no {binding['type']!r} binding"
        if binding["name"] == "$return":
            assert binding["direction"] == "OUT"
            assert converter.check_output_type_annotation(hints["return"])
        elif binding["direction"] == "OUT":
            assert typing.get_origin(hints[binding["name"]]) is func.Out
            (value_type,) = typing.get_args(hints[binding["name"]])
            assert converter.check_output_type_annotation(value_type)
        else:
            assert converter.check_input_type_annotation(hints[binding["name"]])


def test_blob_bindings_read_and_write_the_configured_paths(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    app = render()
    assert app.function == "score_blob"
    indexed = _index(app, load_handler)
    trigger, (output,) = indexed["trigger"], indexed["outputs"]
    assert (trigger["type"], trigger["path"], trigger["connection"]) == (
        "blobTrigger",
        "input/{name}.json",
        "TriggerConnectionString",
    )
    assert (output["type"], output["direction"], output["path"], output["connection"]) == (
        "blob",
        "OUT",
        "output/{name}_out.json",
        "TriggerConnectionString",
    )


def test_http_binding_takes_gets_and_posts_on_the_configured_route(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    indexed = _index(render(HTTP), load_handler)
    trigger, (output,) = indexed["trigger"], indexed["outputs"]
    assert trigger["type"] == "httpTrigger"
    assert trigger["authLevel"] == "ANONYMOUS"
    assert sorted(trigger["methods"]) == ["GET", "POST"]  # as /score takes them
    assert trigger["route"] == "models/diabetes"
    assert (output["type"], output["name"]) == ("http", "$return")


def test_http_binding_defaults_to_function_keys_on_route_score(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    indexed = _index(render((BLOB_SETTINGS, "trigger: http")), load_handler)
    assert (indexed["trigger"]["authLevel"], indexed["trigger"]["route"]) == ("FUNCTION", "score")


def test_service_bus_output_queue_is_bound_only_when_configured(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    indexed = _index(render(SERVICE_BUS), load_handler)
    trigger, (output,) = indexed["trigger"], indexed["outputs"]
    assert trigger["type"] == "serviceBusTrigger"
    assert (trigger["queueName"], trigger["connection"]) == ("requests", "ServiceBusConnection")
    assert (output["type"], output["queueName"], output["connection"]) == (
        "serviceBus",
        "predictions",
        "ServiceBusConnection",
    )


def test_service_bus_without_output_queue_has_no_output_binding(
    render: Callable[..., RenderedApp], load_handler: Callable[[RenderedApp], Any]
) -> None:
    indexed = _index(render(SERVICE_BUS_WITHOUT_OUTPUT), load_handler)
    assert indexed["trigger"]["queueName"] == "requests"
    assert indexed["outputs"] == []


def test_host_json_uses_the_v4_extension_bundle_and_the_scoring_timeout(
    render: Callable[..., RenderedApp],
) -> None:
    host = render(("scoring_timeout_ms: 60000", "scoring_timeout_ms: 90500")).json(
        "wwwroot/host.json"
    )
    assert host["version"] == "2.0"
    bundle = host["extensionBundle"]
    assert bundle["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    # A NuGet version range: every 4.x bundle (what Functions runtime ~4 loads), not 5.
    version_range = re.fullmatch(r"\[(\d+)\.\*, (\d+)\.0\.0\)", bundle["version"])
    assert version_range is not None, bundle["version"]
    assert version_range.groups() == ("4", "5")
    assert host["functionTimeout"] == "00:01:31"


@pytest.mark.parametrize(
    ("milliseconds", "timeout"),
    [(1, "00:00:01"), (60_000, "00:01:00"), (61_001, "00:01:02"), (3_600_000, "01:00:00")],
)
def test_function_timeout_is_the_scoring_timeout_rounded_up_to_seconds(
    milliseconds: int, timeout: str
) -> None:
    assert function_timeout(milliseconds) == timeout


# --- the image ----------------------------------------------------------------------


def test_dockerfile_builds_on_the_functions_image_in_the_documented_layout(
    render: Callable[..., RenderedApp],
) -> None:
    app = render()
    dockerfile = app.files["Dockerfile"]
    assert re.findall(r"^FROM (.+)$", dockerfile, re.MULTILINE) == [
        "mcr.microsoft.com/azure-functions/python:4-python3.11"
    ]
    assert "AzureWebJobsScriptRoot=/home/site/wwwroot" in dockerfile
    assert "AzureFunctionsJobHost__Logging__Console__IsEnabled=true" in dockerfile
    # Least to most often changed: dependencies, the function app, the entry script, the model.
    steps = [
        "RUN pip install -r /tmp/environment/requirements.txt",
        "COPY wwwroot/ /home/site/wwwroot/",
        "COPY app/ /var/azureml-app/",
        "COPY model/ ",
    ]
    positions = [dockerfile.index(step) for step in steps]
    assert positions == sorted(positions)
    paths = _container_paths(app)
    assert paths["AZUREML_ENTRY_SCRIPT"].read_bytes() == (EXAMPLE / "score.py").read_bytes()
    model = paths["AZUREML_MODEL_DIR"] / "model" / "diabetes.onnx"
    assert model.read_bytes() == (EXAMPLE / "model" / "diabetes.onnx").read_bytes()
    assert (paths["AzureWebJobsScriptRoot"] / "host.json").is_file()


def test_worker_processes_follow_server_workers_up_to_the_hosts_limit(
    render: Callable[..., RenderedApp],
) -> None:
    assert "FUNCTIONS_WORKER_PROCESS_COUNT=1 " in render().files["Dockerfile"]
    many = render(("workers: 1", "workers: 16")).files["Dockerfile"]
    assert "FUNCTIONS_WORKER_PROCESS_COUNT=10 " in many


def test_requirements_add_azure_functions_to_the_users_once(
    render: Callable[..., RenderedApp], example_copy: Callable[..., Path], tmp_path: Path
) -> None:
    app = render()
    assert app.files["requirements.txt"] == "onnxruntime==1.31.1\nnumpy==2.4.6\nazure-functions\n"
    config_path = example_copy(("conda_file: environment.yml", "pip_requirements: req.txt"))
    (config_path.parent / "req.txt").write_text("numpy==2.4.6\nAzure_Functions==1.26.0")
    app = _render(config_path, tmp_path / "pip")
    assert app.files["requirements.txt"] == "numpy==2.4.6\nAzure_Functions==1.26.0"


# --- app.json -----------------------------------------------------------------------


def test_app_json_holds_a_site_and_plan_that_azure_mgmt_web_reads(
    render: Callable[..., RenderedApp],
) -> None:
    from azure.mgmt.web.models import AppServicePlan, Site

    app = render()
    deployment = json.loads(app.artifacts["app.json"])
    plan = AppServicePlan(deployment["plan"]["body"])
    site = Site(deployment["site"]["body"])
    assert (plan.kind, plan.sku.name, plan.properties.reserved) == ("elastic", "EP1", True)
    assert site.kind == "functionapp,linux,container"
    assert site.properties.reserved is True
    assert site.properties.server_farm_id.endswith(
        f"/resourceGroups/ml-rg/providers/Microsoft.Web/serverfarms/{deployment['plan']['name']}"
    )
    assert site.properties.site_config.linux_fx_version == f"DOCKER|{app.image}"
    settings = {s["name"]: s["value"] for s in site.properties.site_config.app_settings}
    assert settings == {
        "FUNCTIONS_EXTENSION_VERSION": "~4",
        "FUNCTIONS_WORKER_RUNTIME": "python",
        "WEBSITES_ENABLE_APP_SERVICE_STORAGE": "false",
        "AzureWebJobsStorage": "${AzureWebJobsStorage}",
        "TriggerConnectionString": "${TriggerConnectionString}",
        "DOCKER_REGISTRY_SERVER_URL": "https://127.0.0.1:5000",
        "DOCKER_REGISTRY_SERVER_USERNAME": "${REGISTRY_USERNAME}",
        "DOCKER_REGISTRY_SERVER_PASSWORD": "${REGISTRY_PASSWORD}",
    }
    assert site.tags == {
        "deployer-service": "diabetes",
        "deployer-target": "batch",
        "deployer-model-name": "diabetes-ridge",
        "deployer-model-version": app.model_version,
    }
    assert deployment["function"] == {"name": "score_blob", "trigger": "blob"}
    assert (deployment["subscription_id"], deployment["location"]) == (
        "00000000-0000-0000-0000-000000000000",
        None,
    )


def test_plan_name_fits_azures_limit_for_the_longest_app_name(
    render: Callable[..., RenderedApp],
) -> None:
    long_name = "diabetes-" + "x" * 51
    app = render(("app_name: diabetes-fn", f"app_name: {long_name}"))
    deployment = json.loads(app.artifacts["app.json"])
    assert deployment["site"]["name"] == long_name
    assert deployment["plan"]["name"] == long_name[:55] + "-plan"
    assert len(deployment["plan"]["name"]) == 60


def test_app_json_names_each_triggers_connection_and_no_registry_secret_without_auth(
    render: Callable[..., RenderedApp],
) -> None:
    def settings(app: RenderedApp) -> dict[str, str]:
        site = json.loads(app.artifacts["app.json"])["site"]["body"]
        return {s["name"]: s["value"] for s in site["properties"]["siteConfig"]["appSettings"]}

    service_bus = settings(render(SERVICE_BUS, ("auth: basic", "auth: none")))
    assert service_bus["ServiceBusConnection"] == "${ServiceBusConnection}"
    assert not any(name.startswith("DOCKER_REGISTRY_") for name in service_bus)
    http = settings(render(HTTP))
    placeholders = {value for value in http.values() if "${" in value}
    assert placeholders == {
        "${AzureWebJobsStorage}",
        "${REGISTRY_USERNAME}",
        "${REGISTRY_PASSWORD}",
    }


def test_rendering_is_deterministic_and_independent_of_where_the_repo_is(
    render: Callable[..., RenderedApp], tmp_path: Path
) -> None:
    here = _render(EXAMPLE / "deploy.yaml", tmp_path / "example")
    there = render()
    again = render()
    assert here.files == there.files == again.files
    assert here.artifacts == there.artifacts == again.artifacts
    assert here.image == there.image


def test_dockerfile_parses_and_copies_the_app_where_the_functions_host_looks(
    render: Callable[..., RenderedApp],
) -> None:
    from dockerfile_parse import DockerfileParser

    app = render()
    parser = DockerfileParser(path=str(app.root / "Dockerfile"))
    assert parser.baseimage == "mcr.microsoft.com/azure-functions/python:4-python3.11"
    copies = [item["value"].split() for item in parser.structure if item["instruction"] == "COPY"]
    assert ["wwwroot/", "/home/site/wwwroot/"] in copies
    assert parser.envs["AzureWebJobsScriptRoot"] == "/home/site/wwwroot"
    # The v2 model's entry point and host.json at the script root, the core beside them.
    for name in ("function_app.py", "host.json", "deployer_scoring.py", "deployer/serving"):
        assert (app.root / "wwwroot" / name).exists(), name


@pytest.mark.skip(
    reason="building needs mcr.microsoft.com/azure-functions/python:4-python3.11, which "
    "cannot be pulled here (no registry but 127.0.0.1); the Dockerfile is parsed instead"
)
def test_the_image_builds_on_the_functions_base_image() -> None:
    raise AssertionError("not run here")
