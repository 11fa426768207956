"""Workflow commands and files: escaping, annotations, masks, outputs."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployer.errors import Problem
from deployer.github import actions
from tests.github.workflow_job import parse_outputs


def test_data_escapes_percent_and_line_breaks() -> None:
    assert actions.escape_data("50% done\r\nnext: a,b") == "50%25 done%0D%0Anext: a,b"


def test_properties_also_escape_colon_and_comma() -> None:
    assert actions.escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_a_problem_becomes_an_error_annotation_at_its_position() -> None:
    problem = Problem("deploy.yaml", 12, 7, "targets.staging.port", "must be at most 65535")
    assert actions.annotate_problems([problem]) == [
        "::error file=deploy.yaml,line=12,col=7,title=deploy.yaml%3A targets.staging.port"
        "::must be at most 65535"
    ]


def test_annotations_escape_what_would_end_a_property_or_the_command() -> None:
    problem = Problem(
        "my,models/deploy.yaml", 3, 1, "", "expected a mapping, got '100%'\n::add-mask::x"
    )
    (line,) = actions.annotate_problems([problem])
    assert line == (
        "::error file=my%2Cmodels/deploy.yaml,line=3,col=1,title=deploy.yaml"
        "::expected a mapping, got '100%25'%0A::add-mask::x"
    )
    assert "\n" not in line


def test_annotation_paths_are_relative_to_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The action may run in a folder of the repository; GitHub wants repository paths."""
    (tmp_path / "models").mkdir()
    monkeypatch.chdir(tmp_path / "models")
    problem = Problem("deploy.yaml", 1, 1, "name", "must be lowercase")
    (line,) = actions.annotate_problems([problem], workspace=tmp_path)
    assert line.startswith("::error file=models/deploy.yaml,line=1,col=1,")


def test_masks_register_each_secret_and_each_line_of_a_multiline_one() -> None:
    assert actions.mask_commands(["hunter22", "-----BEGIN KEY-----\nMIIEv\nab", "hunter22"]) == [
        "::add-mask::hunter22",
        "::add-mask::-----BEGIN KEY-----%0AMIIEv%0Aab",
        "::add-mask::-----BEGIN KEY-----",
        "::add-mask::MIIEv",
    ]


def test_outputs_read_back_exactly_even_with_newlines(tmp_path: Path) -> None:
    path = tmp_path / "output"
    values = {"multi": "line one\nline two\n\nname<<EOF", "empty": "", "json": '{"a":"b"}'}
    actions.write_outputs(path, values)
    assert parse_outputs(path.read_text()) == values


def test_a_delimiter_found_in_the_value_is_drawn_again(monkeypatch: pytest.MonkeyPatch) -> None:
    draws: Iterator[str] = iter(["aaaa", "bbbb"])
    monkeypatch.setattr(secrets, "token_hex", lambda n: next(draws))
    entry = actions.output_entry("uris", "ends with ghadelimiter_aaaa")
    assert entry == "uris<<ghadelimiter_bbbb\nends with ghadelimiter_aaaa\nghadelimiter_bbbb\n"


def test_the_summary_is_appended_as_a_block_of_its_own(tmp_path: Path) -> None:
    path = tmp_path / "summary"
    path.write_text("earlier step\n")
    actions.append_summary(path, "### Deploy")
    actions.append_summary(path, "### Plan\n")
    assert path.read_text() == "earlier step\n### Deploy\n\n### Plan\n\n"
