"""The Jinja environment every artifact is rendered with.

StrictUndefined turns a typo in a template into an error instead of an empty string, and
values reach structured files only through serialising filters (``tojson``, ``toyaml``,
``dockerquote``, ``shquote``), never by pasting raw strings into JSON, YAML or shell.
"""

from __future__ import annotations

import json
import shlex
from functools import cache
from typing import Any

import jinja2
import yaml

from deployer.resources import templates_dir


def to_json(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, indent=indent, ensure_ascii=False, sort_keys=False)


class _BlockDumper(yaml.SafeDumper):
    """Indents lists under their key, as Kubernetes manifests are usually written."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def to_yaml(value: Any) -> str:
    return yaml.dump(
        value,
        Dumper=_BlockDumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1000,
    ).rstrip("\n")


def docker_quote(value: str) -> str:
    """A double-quoted Dockerfile string: no variable expansion, no line breaks."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$")
    escaped = escaped.replace("\n", "\\n")
    return f'"{escaped}"'


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(templates_dir()),
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # nothing here is HTML; structured output goes through filters
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        tojson=to_json, toyaml=to_yaml, dockerquote=docker_quote, shquote=shlex.quote
    )
    return env


class Templates:
    """The template folder of one kind: ``templates/<folder>/``."""

    def __init__(self, folder: str) -> None:
        self.folder = folder

    def render(self, name: str, **values: Any) -> str:
        template = _environment().get_template(f"{self.folder}/{name}")
        return template.render(**values)

    def names(self) -> list[str]:
        root = templates_dir() / self.folder
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
