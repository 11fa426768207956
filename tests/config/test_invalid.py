"""Every case of the invalid corpus fails ``deployer validate`` with exactly its lines."""

from __future__ import annotations

from pathlib import Path

import pytest

from deployer.cli import main
from tests.config.corpus import Case, cases

CASES = cases()


def test_the_corpus_is_large_and_every_case_expects_something() -> None:
    assert len(CASES) >= 30
    for case in CASES:
        assert case.expected_lines, f"{case.path.name} has no '# expect: ' line"


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_validate_reports_exactly_the_expected_problems(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    case.install(tmp_path)
    monkeypatch.chdir(tmp_path)

    exit_code = main(["validate", "-c", "deploy.yaml"])

    out, err = capsys.readouterr()
    assert (exit_code, out) == (2, "")
    assert err == case.expected_stderr
