"""The aci driver's pure parts: names, secret sources, ARM errors in words.

The driver itself runs against the ARM test double in the conformance suite
(tests/conformance) and in tests/targets/test_aci_double_deploy.py.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployer.azure.arm_errors import explain
from deployer.targets.aci.driver import (
    MAX_NAME,
    _candidate_label,
    _parse_sources,
    _secret_sources,
    group_names,
)


def test_group_names_are_the_service_and_target_and_a_candidate_beside_them() -> None:
    assert group_names("diabetes", "staging") == (
        "diabetes-staging",
        "diabetes-staging-candidate",
    )


def test_long_names_fit_acis_limit_and_stay_distinct() -> None:
    service = "s" * 40
    first = group_names(service, "t" * 30)
    second = group_names(service, "t" * 29 + "u")
    for service_group, candidate in (first, second):
        assert len(candidate) <= MAX_NAME
        assert candidate == service_group + "-candidate"
    assert first[0] != second[0]


def test_the_candidate_gets_its_own_dns_label() -> None:
    assert _candidate_label("diabetes") == "diabetes-candidate"
    assert len(_candidate_label("x" * 63)) <= MAX_NAME


def test_secret_sources_name_where_each_secret_comes_from() -> None:
    body = {
        "properties": {
            "containers": [
                {
                    "properties": {
                        "environmentVariables": [
                            {"name": "PLAIN", "value": "1"},
                            {"name": "DEPLOYER_SCORING_KEY", "secureValue": "${SCORING_KEY}"},
                        ]
                    }
                }
            ],
            "imageRegistryCredentials": [
                {"server": "r.azurecr.io", "username": "${U}", "password": "${P}"}
            ],
        }
    }
    tag = _secret_sources(body)
    assert tag == "DEPLOYER_SCORING_KEY=SCORING_KEY,@registry=P"
    assert _parse_sources(tag) == {"DEPLOYER_SCORING_KEY": "SCORING_KEY", "@registry": "P"}
    assert len(tag) <= 256, "an Azure tag value holds 256 characters"


def _arm_error(status: int, code: str, message: str) -> SimpleNamespace:
    return SimpleNamespace(
        status_code=status, error=SimpleNamespace(code=code, message=message), message=message
    )


@pytest.mark.parametrize(
    ("status", "code", "message", "fix"),
    [
        (401, "InvalidAuthenticationToken", "The access token is invalid.", "az login"),
        (
            403,
            "AuthorizationFailed",
            "The client 'x' with object id 'y' does not have authorization to perform action "
            "'Microsoft.ContainerInstance/containerGroups/write' over scope '/subscriptions/s/"
            "resourceGroups/rg' or the scope is invalid.",
            "'Microsoft.ContainerInstance/containerGroups/write' on "
            "/subscriptions/s/resourceGroups/rg",
        ),
        (
            409,
            "MissingSubscriptionRegistration",
            "The subscription is not registered to use namespace 'Microsoft.ContainerInstance'.",
            "az provider register --namespace Microsoft.ContainerInstance",
        ),
        (
            404,
            "ResourceGroupNotFound",
            "Resource group 'rg' could not be found.",
            "az group create",
        ),
        (
            409,
            "ContainerGroupQuotaReached",
            "Resource type 'Microsoft.ContainerInstance/containerGroups' container group quota "
            "'StandardCores' exceeded in region 'eastus'.",
            "quota",
        ),
        (503, "ServiceUnavailable", "The requested resource is not available.", "try again"),
    ],
)
def test_arm_errors_name_the_fix(status: int, code: str, message: str, fix: str) -> None:
    text = explain(
        _arm_error(status, code, message), "Microsoft.ContainerInstance", "container group g"
    )
    assert fix in text
