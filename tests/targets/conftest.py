"""What the functions target's tests share: the Azure double, with its settings in the
process's environment (azure-identity and azure-core read them there, as in a CI job).
Test modules with an ``azure`` fixture of their own (the ACI ones) use theirs."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.doubles.azure import AzureDouble


@pytest.fixture
def azure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[AzureDouble]:
    with AzureDouble(tmp_path / "azure", dict(os.environ)) as double:
        for name, value in double.env().items():
            monkeypatch.setenv(name, value)
        yield double
