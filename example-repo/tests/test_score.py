"""Tests of score.py on the committed model: init()/run() as the scoring server calls them."""

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
EXPECTED = json.loads((REPO / "train" / "expected.json").read_text())

TWO_ROWS = {"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [10, 9, 8, 7, 6, 5, 4, 3, 2, 1]]}
# First three rows of sklearn.datasets.load_diabetes(), rounded to 6 decimals.
# fmt: off
DATASET_ROWS = {
    "data": [
        [0.038076, 0.05068, 0.061696, 0.021872, -0.044223,
         -0.034821, -0.043401, -0.002592, 0.019907, -0.017646],
        [-0.001882, -0.044642, -0.051474, -0.026328, -0.008449,
         -0.019163, 0.074412, -0.039493, -0.068332, -0.092204],
        [0.085299, 0.05068, 0.044451, -0.00567, -0.045599,
         -0.034194, -0.032356, -0.002592, 0.002861, -0.02593],
    ]
}
# fmt: on


@pytest.fixture
def score(monkeypatch):
    """A fresh copy of score.py, init()-ed with AZUREML_MODEL_DIR pointing at this repo."""
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    spec = importlib.util.spec_from_file_location("diabetes_score", REPO / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.init()
    return module


@pytest.mark.parametrize(("name", "body"), [("two-rows", TWO_ROWS), ("dataset-rows", DATASET_ROWS)])
def test_predictions_match_expected(score, name, body):
    result = score.run(json.dumps(body))
    assert isinstance(result, list)
    assert all(type(value) is float for value in result)
    assert result == pytest.approx(EXPECTED[name], abs=1e-4)


def test_accepts_bytes(score):
    assert score.run(json.dumps(TWO_ROWS).encode()) == pytest.approx(EXPECTED["two-rows"], abs=1e-4)


def test_one_prediction_per_row(score):
    rows = DATASET_ROWS["data"] * 40
    assert len(score.run(json.dumps({"data": rows}))) == len(rows)


@pytest.mark.parametrize(
    "raw",
    [
        '{"data": [[1, 2, 3]]}',
        '{"data": []}',
        '{"data": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}',
        '{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10], [1, 2]]}',
        '{"data": [["a", 2, 3, 4, 5, 6, 7, 8, 9, 10]]}',
        '{"data": [[null, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}',
        '{"rows": [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}',
        "[[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]",
        '{"data": [[NaN, 2, 3, 4, 5, 6, 7, 8, 9, 10]]}',
        '{"data": [[1, 2, 3, 4, 5, 6, 7, 8, 9, Infinity]]}',
        "not json",
    ],
)
def test_bad_input_raises_value_error(score, raw):
    with pytest.raises(ValueError, match="data"):
        score.run(raw)


def test_init_needs_model_dir(monkeypatch):
    monkeypatch.setenv("AZUREML_MODEL_DIR", str(REPO / "no-such-dir"))
    spec = importlib.util.spec_from_file_location("diabetes_score_missing", REPO / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(Exception, match=r"diabetes\.onnx"):
        module.init()


def test_deploy_yaml_requests_match_expected(score):
    """The requests and rounded expectations in deploy.yaml agree with the model."""
    yaml = pytest.importorskip("yaml")
    deploy = yaml.safe_load((REPO / "deploy.yaml").read_text())
    requests = {r["name"]: r for r in deploy["tests"]["requests"]}
    assert requests["two-rows"]["json"] == TWO_ROWS
    assert requests["dataset-rows"]["json"] == DATASET_ROWS
    for name in ("two-rows", "dataset-rows"):
        expect = requests[name]["expect"]
        assert expect["status"] == 200
        assert expect["json"] == pytest.approx(EXPECTED[name], abs=expect["tolerance"])
    bad = requests["bad-input"]
    assert bad["expect"]["status"] == 500
    with pytest.raises(ValueError, match="10 numbers"):
        score.run(json.dumps(bad["json"]))
