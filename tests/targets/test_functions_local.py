"""``deployer test -t TARGET --local``: the rendered function app run in-process with the
real azure-functions binding types, and a blob trigger proven against Azurite."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from azure.storage.blob import BlobServiceClient

from deployer.cli import main
from deployer.config.loader import load_config
from deployer.targets.functions.local import (
    AZURITE_DEFAULT,
    LocalTestError,
    azurite_connection,
    resolve_path,
    run_local_tests,
)
from tests.azurite import azurite  # noqa: F401  (the fixture)
from tests.conftest import EXAMPLE, REPO
from tests.targets.test_functions import (
    EXPECTED,
    HTTP,
    RAW_SCRIPT,
    SCHEMA_SCRIPT,
    SERVICE_BUS,
    SERVICE_BUS_WITHOUT_OUTPUT,
)

TARGET = "batch"


def _run(config_path: Path, *extra: str) -> int:
    return main(["test", "-c", str(config_path), "-t", TARGET, "--local", *extra])


def test_blob_target_passes_the_examples_tests_in_process(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert _run(EXAMPLE / "deploy.yaml") == 0
    out = capsys.readouterr().out
    assert "function score_blob (blobTrigger, in-process): passed" in out
    for name in ("two-rows", "dataset-rows", "bad-input"):
        assert f"pass  {name}" in out


def test_blob_target_end_to_end_through_azurite(
    azurite: str,  # noqa: F811
    example_copy: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The binding's connection app setting, as the function app has it in Azure.
    monkeypatch.setenv("TriggerConnectionString", azurite)
    config_path = example_copy()
    assert _run(config_path, "--azurite") == 0
    out = capsys.readouterr().out
    assert "function score_blob (blobTrigger, Azurite): passed" in out
    service = BlobServiceClient.from_connection_string(azurite)
    inputs = sorted(b.name for b in service.get_container_client("input").list_blobs())
    assert inputs == ["bad-input.json", "dataset-rows.json", "two-rows.json"]
    sent = service.get_blob_client("input", "two-rows.json").download_blob().readall()
    assert json.loads(sent) == {"data": [list(range(1, 11)), list(range(10, 0, -1))]}
    outputs = sorted(b.name for b in service.get_container_client("output").list_blobs())
    # The output path's pattern resolved with the blob's name; none for the failed input.
    assert outputs == ["dataset-rows_out.json", "two-rows_out.json"]
    written = service.get_blob_client("output", "dataset-rows_out.json").download_blob()
    assert json.loads(written.readall()) == pytest.approx(EXPECTED["dataset-rows"], rel=1e-6)


def test_azurite_failing_expectation_exits_1_with_the_failure(
    azurite: str,  # noqa: F811
    example_copy: Callable[..., Path],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TriggerConnectionString", azurite)
    config_path = example_copy(("json: [4640.521, 3552.4529]", "json: [4640.521, 1.0]"))
    assert _run(config_path, "--azurite") == 1
    out = capsys.readouterr().out
    assert "FAIL  two-rows" in out
    assert "$[1]: 3552.45" in out and "differs from 1.0" in out


def test_azurite_refuses_a_connection_string_that_is_not_on_this_machine() -> None:
    remote = (
        "DefaultEndpointsProtocol=https;AccountName=x;AccountKey=a2V5;"
        "EndpointSuffix=core.windows.net"
    )
    with pytest.raises(LocalTestError, match=r"127\.0\.0\.1"):
        azurite_connection(remote)
    assert azurite_connection(None) == AZURITE_DEFAULT
    assert azurite_connection("UseDevelopmentStorage=true") == AZURITE_DEFAULT


def test_http_target_passes_the_examples_tests_through_http_request_and_response(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = example_copy(
        HTTP,
        (
            "    - name: bad-input",
            '    - name: types\n      json: {"data": [[1,2,3,4,5,6,7,8,9,10]]}\n'
            "      expect: {status: 200, content_type: application/json, "
            'headers: {x-ms-run-function-failed: "False"}}\n    - name: bad-input',
        ),
    )
    assert _run(config_path) == 0
    out = capsys.readouterr().out
    assert "function score_http (httpTrigger, in-process): passed" in out
    assert "pass  types" in out


def test_a_failing_expectation_exits_1_with_the_failure_shown(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    config_path = example_copy(HTTP, ("        status: 500", "        status: 400"))
    assert _run(config_path) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out
    assert "FAIL  bad-input" in out
    assert "status 500, expected 400" in out


def test_service_bus_target_checks_the_output_queue_message(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    assert _run(example_copy(SERVICE_BUS)) == 0
    assert "score_service_bus (serviceBusTrigger, in-process): passed" in capsys.readouterr().out


def test_service_bus_output_that_differs_fails(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = example_copy(SERVICE_BUS, ("json: [4640.521, 3552.4529]", "json: [1.0, 2.0]"))
    assert _run(wrong) == 1
    assert "FAIL  two-rows" in capsys.readouterr().out


def test_service_bus_without_output_queue_checks_the_status_only(
    example_copy: Callable[..., Path],
) -> None:
    config_path = example_copy(SERVICE_BUS_WITHOUT_OUTPUT)
    result = run_local_tests(load_config(config_path), config_path, TARGET)
    assert result.passed
    assert [r.status for r in result.results] == [200, 200, 500]


def _script_target(example_copy: Callable[..., Path], source: str, tests: str) -> Path:
    config_path = example_copy(HTTP)
    (config_path.parent / "score.py").write_text(source)
    text = config_path.read_text()
    start, end = text.index("  requests:\n"), text.index("  latency_p95_ms")
    config_path.write_text(text[:start] + "  requests:\n" + tests + text[end:])
    return config_path


def test_an_input_schema_script_behaves_as_on_the_server(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tests = """\
    - name: keywords
      json: {"data": [[1, 2, 3]], "scale": 2}
      expect: {status: 200, json: [12.0]}
    - name: missing
      json: {"scale": 2}
      expect: {status: 400, json: {"message": "A value is not provided for the 'data' parameter."}}
"""
    assert _run(_script_target(example_copy, SCHEMA_SCRIPT, tests)) == 0, capsys.readouterr().out


def test_a_rawhttp_script_behaves_as_on_the_server(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tests = """\
    - name: raw-post
      body: abc
      headers: {Content-Type: application/octet-stream, X-Twice: "one,two"}
      expect: {status: 201, content_type: application/octet-stream, headers: {X-Seen: "one,two"},
               body_sha256: ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad}
    - name: raw-get
      method: GET
      query: {x: ["1", "2"]}
      expect: {status: 200, json: ["1", "2"]}
"""
    # body_sha256 above is sha256("abc"): the script answers the body reversed ("cba").
    tests = tests.replace(
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        __import__("hashlib").sha256(b"cba").hexdigest(),
    )
    assert _run(_script_target(example_copy, RAW_SCRIPT, tests)) == 0, capsys.readouterr().out


def test_local_is_only_for_functions_targets(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", "-c", str(EXAMPLE / "deploy.yaml"), "-t", "local", "--local"])
    assert code != 0
    assert "not a functions target" in capsys.readouterr().err


def test_blob_paths_resolve_the_hosts_binding_expressions() -> None:
    assert resolve_path("output/{name}_out.json", {"name": "a"}) == "output/a_out.json"
    assert len(resolve_path("out/{rand-guid}.json", {})) == len("out/.json") + 36
    with pytest.raises(LocalTestError, match="has no value"):
        resolve_path("out/{other}.json", {"name": "a"})


def test_validate_does_not_import_azure_functions() -> None:
    code = (
        "import sys; from deployer.cli import main; "
        f"main(['validate', '-c', {str(EXAMPLE / 'deploy.yaml')!r}]); "
        "assert 'azure.functions' not in sys.modules and 'azure.storage' not in sys.modules"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


ROUTE_SCRIPT = """
import json
from azureml.contrib.services.aml_request import rawhttp
from azureml.contrib.services.aml_response import AMLResponse


def init():
    pass


@rawhttp
def run(request):
    return AMLResponse(json.dumps(request.path), 200, json_str=False)
"""


def test_route_parameters_take_deploy_yamls_values(
    example_copy: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    tests = """\
    - name: path
      expect: {status: 200, json: "/api/models/diabetes v2"}
"""
    config_path = _script_target(example_copy, ROUTE_SCRIPT, tests)
    text = config_path.read_text().replace(
        'route: "models/diabetes"}',
        'route: "models/{name}", route_values: {name: "diabetes v2"}}',
    )
    config_path.write_text(text)
    assert _run(config_path) == 0, capsys.readouterr().out
