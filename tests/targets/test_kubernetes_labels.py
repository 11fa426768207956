"""Model names as Kubernetes label values: kept when they fit, derived when they cannot."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from deployer.config.loader import load_config
from deployer.label_values import label_value
from deployer.plan import make_plan

# Kubernetes' rule for label values (apimachinery validation.IsValidLabelValue).
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


@pytest.mark.parametrize(
    "name", ["diabetes-ridge", "sklearn_regression_model.pkl", "my_first_model", "m" * 63]
)
def test_a_name_that_is_a_label_value_is_kept(name: str) -> None:
    assert label_value(name) == name


@pytest.mark.parametrize("name", ["m" * 64, "a" * 255, "model_", "model.v2.", "x" * 60 + "_.-yz"])
def test_other_names_get_a_valid_value_that_tells_them_apart(name: str) -> None:
    value = label_value(name)

    assert LABEL_VALUE.match(value) and len(value) <= 63
    assert value == label_value(name)  # the same name, the same value
    assert value != label_value(name + "0")
    assert value.startswith(name[:20].rstrip("-_.")[:20])  # still readable


def test_the_deployment_labels_carry_an_sdk_v1_model_name(
    example_copy: Callable[..., Path],
) -> None:
    config_path = example_copy(("name: diabetes-ridge", "name: sklearn_regression_model.pkl"))
    plan = make_plan(load_config(config_path), config_path, ["production"])

    deployment = yaml.safe_load(plan.targets[0].artifacts["deployment.yaml"])

    labels = deployment["metadata"]["labels"]
    assert labels["deployer.ai/model-name"] == "sklearn_regression_model.pkl"
    assert labels["app.kubernetes.io/version"] == plan.inputs.model_version
