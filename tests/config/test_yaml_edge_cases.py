"""YAML that PyYAML accepts, or chokes on, in ways deploy.yaml must report as one clear line."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from deployer.config.loader import load_config
from deployer.errors import ConfigError
from tests.config.corpus import FILES

VALID = (FILES / "deploy.yaml").read_text(encoding="utf-8")


def problems(tmp_path: Path, text: str) -> list[str]:
    shutil.copytree(FILES, tmp_path, dirs_exist_ok=True)
    config = tmp_path / "deploy.yaml"
    config.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    shown = f"{config}:"
    return [str(problem).removeprefix(shown) for problem in caught.value.problems]


def test_a_zero_byte_file_is_empty(tmp_path: Path) -> None:
    assert problems(tmp_path, "") == [
        "1:1: the file is empty; expected a mapping with version, name, model, entry_script, "
        "registry and targets"
    ]


def test_a_recursive_alias_is_reported_not_followed(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID + "loop: &loop [1, *loop]\n") == [
        "18:7: YAML error: the node anchored here contains an alias to itself"
    ]


def test_a_mapping_merged_into_itself_is_reported(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID + "loop: &loop {a: 1, <<: *loop}\n") == [
        "18:7: YAML error: '<<' merges the mapping anchored here into itself"
    ]


def test_aliases_cannot_expand_the_document_without_bound(tmp_path: Path) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)
    ]
    started = time.perf_counter()
    found = problems(tmp_path, VALID + "\n".join(levels) + "\n")
    # Reported at the top-level key whose expansion passes the bound (a4, line 22).
    assert found == ["22:1: YAML error: aliases expand the document to more than 100000 values"]
    assert time.perf_counter() - started < 5


def test_a_control_character_is_located(tmp_path: Path) -> None:
    assert problems(tmp_path, VALID.replace("name: diabetes", "name: dia\x07betes")) == [
        "3:10: YAML syntax error: character U+0007 is not allowed in YAML (control characters "
        "must be written as escapes in a double-quoted string)"
    ]


def test_a_list_as_a_key_is_reported_and_the_rest_still_checked(tmp_path: Path) -> None:
    text = VALID.replace("name: diabetes", "name: Diabetes") + "? [a, b]\n: 1\n"
    assert problems(tmp_path, text) == [
        "3:7: name: 'Diabetes' is not a valid service name: use 3 to 40 lowercase letters, "
        "digits and '-', starting and ending with a letter or digit",
        "18:3: mapping keys must be plain text, not a list or mapping",
    ]


def test_a_merge_of_something_else_than_a_mapping_is_reported(tmp_path: Path) -> None:
    text = VALID.replace("local: {type: local, port: 8080}", "local: {<<: 8080, type: local}")
    assert problems(tmp_path, text) == [
        "17:15: targets.local: '<<' merges a mapping or a list of mappings only"
    ]


def test_a_key_repeated_inside_one_flow_mapping_gives_its_column(tmp_path: Path) -> None:
    text = VALID.replace("port: 8080}", "port: 1, port: 2}")
    assert problems(tmp_path, text) == [
        "17:33: targets.local.port: duplicate key 'port' (first defined at line 17, column 24)"
    ]


def test_keys_that_are_not_simple_names_are_quoted_in_the_path(tmp_path: Path) -> None:
    text = VALID.replace(
        "  pip_requirements: requirements.txt",
        '  pip_requirements: requirements.txt\n  variables: {"A.B": "1"}',
    )
    assert problems(tmp_path, text) == [
        "10:15: environment.variables[\"A.B\"]: 'A.B' is not a valid environment variable "
        "name: use letters, digits and '_', not starting with a digit"
    ]
