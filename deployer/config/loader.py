"""Read deploy.yaml into a ``DeployConfig``, or report every problem with its position.

Each problem names the node it is about by its dotted path and points at it:

* a problem with a scalar value points at the value;
* a problem with a whole mapping or list (missing key, wrong type, a rule between its
  keys) points at the key that names it, which is where the author looks and types;
* a problem with a key itself (unknown, duplicate, invalid as a name) points at the key.

pydantic's messages are rephrased for a YAML author: what was expected, what was found.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import replace
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from deployer.config import envfile
from deployer.config.fields import describe
from deployer.config.model import DeployConfig, Environment
from deployer.config.yamlsource import Position, SourceMap, YamlSyntaxError, dotted, parse
from deployer.errors import ConfigError, Problem, UserError
from deployer.targets.kinds import KINDS, SCHEMAS

Loc = tuple[str | int, ...]

# pydantic's type errors: what the field expects, in YAML words.
_EXPECTED = {
    "int_type": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "string_type": "a string",
    "bool_type": "true or false",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "list_type": "a list",
}
_BOUNDS = {
    "greater_than": ("gt", "greater than"),
    "greater_than_equal": ("ge", "at least"),
    "less_than": ("lt", "less than"),
    "less_than_equal": ("le", "at most"),
}


def load_config(path: str | Path, check_files: bool = True) -> DeployConfig:
    """Validate the deploy.yaml at ``path``. Raises ``ConfigError`` listing every problem.

    ``check_files=False`` skips the files it names (model, entry script, environment): the
    commands that act on a deployment by name (status, logs, down) need deploy.yaml's
    settings only, and must work where the model files are not (a CI job for clean-up).
    """
    path = Path(path)
    shown = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{shown}: no such file (pass the config with -c PATH)") from None
    except IsADirectoryError:
        raise UserError(f"{shown}: is a directory, not a deploy.yaml") from None
    except UnicodeDecodeError as exc:
        raise UserError(f"{shown}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    return validate_text(text, shown, base_dir=path.resolve().parent if check_files else None)


def validate_text(text: str, shown: str, base_dir: Path | None) -> DeployConfig:
    """Validate deploy.yaml's ``text``; problems name the file ``shown``, and the files it
    references are looked up in ``base_dir`` (None: not looked up at all)."""

    def at(position: Position, path: Loc, message: str) -> Problem:
        return Problem(shown, position.line, position.col, dotted(path), message)

    try:
        data, source, yaml_issues = parse(text.removeprefix("\ufeff"))
    except YamlSyntaxError as exc:
        raise ConfigError([at(exc.position, (), exc.message)]) from None
    if data is None:
        raise ConfigError(
            [
                at(
                    Position(1, 1),
                    (),
                    "the file is empty; expected a mapping with "
                    "version, name, model, entry_script, registry and targets",
                )
            ]
        )
    if not isinstance(data, dict):
        raise ConfigError(
            [
                at(
                    source.value(()),
                    (),
                    "the top level must be a mapping of keys "
                    f"(version, name, model, ...), not {describe(data)}",
                )
            ]
        )
    problems = [at(issue.position, issue.path, issue.message) for issue in yaml_issues]
    context = {"base_dir": base_dir} if base_dir is not None else {}
    shown_dir = Path(shown).parent
    try:
        config = DeployConfig.model_validate(data, context=context)
    except ValidationError as exc:
        problems += [_problem(err, data, source, shown) for err in exc.errors()]
        # The conda file is still checked when its section is valid on its own.
        try:
            environment = Environment.model_validate(data.get("environment", {}), context=context)
        except ValidationError:
            pass
        else:
            if base_dir is not None:
                problems += envfile.check(environment, base_dir, shown_dir)
    else:
        if base_dir is not None:
            problems += envfile.check(config.environment, base_dir, shown_dir)
    if problems:
        # One line per problem, whatever a validator put in its message.
        raise ConfigError([replace(p, message=" ".join(p.message.split())) for p in problems])
    return config


def _problem(err: ErrorDetails, data: Any, source: SourceMap, shown: str) -> Problem:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    loc, about_key = _data_path(err["loc"])
    message = _message(err, loc, data)
    at = ctx.get("at")
    if at is not None:
        loc = (*loc, *(at if isinstance(at, tuple) else (at,)))
    if kind == "union_tag_invalid":
        loc = (*loc, "type")
    if kind == "missing":
        loc = loc[:-1]  # the mapping that lacks the key
    if kind == "extra_forbidden" or about_key:
        position = source.key(loc)
    else:
        loc = _in_document(loc, data)
        node = _node(loc, data)
        container = isinstance(node, dict | list) or kind in ("missing", "union_tag_not_found")
        position = source.key(loc) if container else source.value(loc)
    return Problem(shown, position.line, position.col, dotted(loc), message)


def _data_path(loc: Loc) -> tuple[Loc, bool]:
    """Map pydantic's error location onto the document: (path, whether about the key).

    pydantic appends ``[key]`` for a dict key that failed, and inserts the union member's
    tag (the ``type`` value) after ``targets.<name>`` for errors inside a target; neither
    is a step in the document.
    """
    about_key = loc[-1:] == ("[key]",)
    if about_key:
        loc = loc[:-1]
    if len(loc) > 2 and loc[0] == "targets":
        loc = (*loc[:2], *loc[3:])
    return loc, about_key


def _in_document(loc: Loc, data: Any) -> Loc:
    """The longest prefix of ``loc`` that is in the document (``at=`` may name an absent
    key: the problem then concerns the mapping that lacks it)."""
    node = data
    for index, step in enumerate(loc):
        node = _child(node, step, _ABSENT)
        if node is _ABSENT:
            return loc[:index]
    return loc


_ABSENT = object()


def _child(node: Any, step: str | int, absent: Any = None) -> Any:
    """``node[step]`` in the document, or ``absent``."""
    if isinstance(node, dict):
        return node.get(step, absent)
    if isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node):
        return node[step]
    return absent


def _node(loc: Loc, data: Any) -> Any:
    for step in loc:
        data = _child(data, step)
    return data


def _message(err: ErrorDetails, loc: Loc, data: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    value = err.get("input")
    if kind == "extra_forbidden":
        return _unknown_key_message(loc, data)
    if kind == "missing":
        return f"missing required key '{loc[-1]}'"
    if kind == "union_tag_not_found":
        return f"missing required key 'type' (one of: {', '.join(KINDS)})"
    if kind == "union_tag_invalid":
        return _choice_message("unknown target type", str(ctx.get("tag")), list(KINDS))
    if kind == "literal_error":
        choices = re.findall(r"'([^']*)'", str(ctx.get("expected", "")))
        return _literal_message(value, choices) if choices else _plain(err["msg"])
    if kind in _EXPECTED:
        return _type_message(_EXPECTED[kind], value)
    if kind in _BOUNDS:
        key, words = _BOUNDS[kind]
        return f"must be {words} {_number(ctx.get(key))}, got {_number(value)}"
    if kind in ("string_too_short", "too_short") and ctx.get("min_length") == 1:
        return "must not be empty"
    if kind == "string_too_short":
        return f"must be at least {ctx.get('min_length')} characters long, got {len(value)}"
    if kind == "string_too_long":
        return f"must be at most {ctx.get('max_length')} characters long, got {len(value)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length')} entries, got {ctx.get('actual_length')}"
    if kind == "too_long":
        return f"must have at most {ctx.get('max_length')} entries, got {ctx.get('actual_length')}"
    if kind == "string_pattern_mismatch":  # a pattern without a Rule (fields.Rule) to word it
        return f"{value!r} is not valid here: it must match the pattern {ctx.get('pattern')}"
    return _plain(err["msg"])


def _number(value: Any) -> Any:
    """2.0 as 2: bounds and YAML numbers as the author would write them."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _type_message(expected: str, value: Any) -> str:
    message = f"must be {expected}, got {describe(value)}"
    if expected.endswith("number") and isinstance(value, str) and _is_number(value):
        return f"{message} (remove the quotes)"
    if expected == "a string" and not isinstance(value, str | list | dict | None):
        return f"{message} (put it in quotes)"
    return message


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _literal_message(value: Any, choices: list[str]) -> str:
    listed = ", ".join(repr(choice) for choice in choices)
    got = repr(value) if isinstance(value, str) else describe(value)
    if len(choices) == 1:
        return f"must be {listed}, got {got}"
    message = f"must be one of {listed}, got {got}"
    hint = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.6)
    return f"{message}; did you mean {hint[0]!r}?" if hint else message


def _choice_message(what: str, value: str, choices: list[str]) -> str:
    hint = difflib.get_close_matches(value, choices, n=1, cutoff=0.6)
    if hint:
        return f"{what} {value!r}; did you mean {hint[0]!r}?"
    return f"{what} {value!r}; expected one of: {', '.join(choices)}"


def _plain(message: str) -> str:
    """A message from a validator: pydantic's "Value error, " prefix dropped."""
    return message.removeprefix("Value error, ")


def _unknown_key_message(loc: Loc, data: Any) -> str:
    key = str(loc[-1])
    section = _section_model(loc[:-1], data)
    if section is None:
        return f"unknown key {key!r}"
    known = [field.alias or name for name, field in section.model_fields.items()]
    hint = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if hint:
        return f"unknown key {key!r}; did you mean {hint[0]!r}?"
    if len(loc) == 3 and loc[0] == "targets":
        # A setting of another kind of target, e.g. 'replicas' in an aci target.
        this = _node(loc[:2], data)["type"]  # a known kind: its section model was found
        others = [name for name, other in SCHEMAS.items() if key in other.Config.model_fields]
        if others:
            return (
                f"unknown key {key!r}: {this} targets do not take it "
                f"({', '.join(others)} targets do)"
            )
    return f"unknown key {key!r}; expected one of: {', '.join(known)}"


def _section_model(path: Loc, data: Any) -> type[BaseModel] | None:
    """The model of the mapping at ``path`` (for a target: its kind's ``Config``)."""
    model: type[BaseModel] = DeployConfig
    node = data
    for index, step in enumerate(path):
        node = _child(node, step)
        if index == 1 and path[0] == "targets":
            kind = SCHEMAS.get(str(node.get("type"))) if isinstance(node, dict) else None
            if kind is None:
                return None
            model = kind.Config
            continue
        if isinstance(step, int) or (index == 0 and step == "targets"):
            continue  # a list item has its list's model; targets are resolved next step
        field = next(
            (f for name, f in model.model_fields.items() if (f.alias or name) == step), None
        )
        found = _models_in(field.annotation) if field is not None else []
        if not found:
            return None
        model = found[0]
    return model


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds (``Autoscale | None``, ``list[ScoringTest]``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]
