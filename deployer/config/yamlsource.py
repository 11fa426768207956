"""Parse YAML into plain data while remembering where every node stands.

PyYAML's constructors drop positions, so we compose the node graph and build the data
ourselves: each mapping key and value keeps its 1-based line and column, which is what lets
every validation problem point at ``deploy.yaml:LINE:COL``. What PyYAML would accept
silently but is almost always a mistake is reported instead: duplicate keys (PyYAML lets
the last one win) and keys that YAML reads as numbers or booleans (``on:``, ``8080:``).
Merge keys (``<<: *anchor``) work as in PyYAML: the mapping's own keys win over merged ones.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]

_MERGE_TAG = "tag:yaml.org,2002:merge"
_NULL_TAG = "tag:yaml.org,2002:null"
# Aliases let a short file expand into a huge tree ("billion laughs"); a deploy.yaml
# has a few hundred values.
MAX_VALUES = 100_000


def dotted(path: Path) -> str:
    """``tests.requests[1].expect``: how problems name a node; odd keys are quoted."""
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif re.fullmatch(r"[A-Za-z0-9_-]+", step):
            out += f".{step}" if out else step
        else:
            out += json.dumps([step])  # e.g. environment.variables["A.B"]
    return out


@dataclass(frozen=True)
class Position:
    line: int  # 1-based
    col: int  # 1-based


def _pos(mark: yaml.Mark) -> Position:
    return Position(mark.line + 1, mark.column + 1)


@dataclass
class SourceMap:
    """Where each node of a document stands: its key (for mapping entries) and its value.

    An empty value (``key:`` and nothing) stands at its key: there is nothing else to show.
    """

    values: dict[Path, Position] = field(default_factory=dict)
    keys: dict[Path, Position] = field(default_factory=dict)

    def value(self, path: Path) -> Position:
        """Position of the node at ``path``, or of its nearest existing ancestor."""
        while path not in self.values and path:
            path = path[:-1]
        return self.values.get(path, Position(1, 1))

    def key(self, path: Path) -> Position:
        """Position of the key naming ``path`` (its value's position for list items)."""
        return self.keys.get(path) or self.value(path)


@dataclass(frozen=True)
class YamlIssue:
    """A problem found while reading the YAML itself (before any schema)."""

    position: Position
    path: Path
    message: str


class YamlSyntaxError(Exception):
    """The text is not one readable YAML document: nothing else can be checked."""

    def __init__(self, position: Position, message: str) -> None:
        self.position = position
        self.message = message
        super().__init__(message)


def parse(text: str) -> tuple[Any, SourceMap, list[YamlIssue]]:
    """Return the document's data, its source map and the issues found in the YAML.

    Raises ``YamlSyntaxError`` for text that is not YAML, or holds several documents.
    """
    try:
        # The loader's reader checks every character as it is created.
        loader = yaml.SafeLoader(text)
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as exc:
        raise _syntax_error(exc) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        col = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        raise YamlSyntaxError(
            Position(line, col),
            f"YAML syntax error: character U+{exc.character:04X} is not allowed in YAML "
            "(control characters must be written as escapes in a double-quoted string)",
        ) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(Position(1, 1), f"YAML error: {' '.join(str(exc).split())}") from None
    loader.dispose()
    source = SourceMap()
    issues: list[YamlIssue] = []
    if node is None:
        return None, source, issues
    return _Builder(loader, source, issues).build(node, (), None), source, issues


def _syntax_error(exc: yaml.MarkedYAMLError) -> YamlSyntaxError:
    """PyYAML's error, said in terms of what the author typed and where to fix it."""
    problem = exc.problem or "invalid YAML"
    context = exc.context or ""
    problem_at = _pos(exc.problem_mark) if exc.problem_mark else Position(1, 1)
    context_at = _pos(exc.context_mark) if exc.context_mark else problem_at
    found = re.search(r"but (?:got|found) '?([^']*)'?$", problem)
    found_text = found[1] if found else ""
    where = (
        "the end of the file"
        if found_text == "<stream end>"
        else f"{found_text!r} at line {problem_at.line}, column {problem_at.col}"
    )
    if context.startswith("while parsing a flow"):
        kind, closer = ("mapping", "}") if "mapping" in context else ("list", "]")
        return YamlSyntaxError(
            context_at,
            f"YAML syntax error: this flow {kind} is not closed with '{closer}' "
            f"(or lacks a ',' between entries); the parser reached {where}",
        )
    if context == "while scanning a quoted scalar":
        return YamlSyntaxError(
            context_at, f"YAML syntax error: this quoted string is not closed; reached {where}"
        )
    if "'\\t'" in problem:
        return YamlSyntaxError(
            problem_at, "YAML syntax error: a tab character; YAML indents with spaces only"
        )
    if context == "expected a single document in the stream":
        return YamlSyntaxError(
            problem_at,
            "YAML syntax error: a second YAML document starts here; deploy.yaml holds one",
        )
    if problem == "mapping values are not allowed here":
        return YamlSyntaxError(
            problem_at,
            "YAML syntax error: unexpected ':' (check this line's indentation, "
            "or quote a value that contains ': ')",
        )
    if context == "while parsing a block mapping" and found_text:
        return YamlSyntaxError(
            problem_at,
            "YAML syntax error: bad indentation: this line does not line up with the keys "
            f"of the mapping that starts at line {context_at.line}",
        )
    if problem.startswith("found undefined alias"):
        return YamlSyntaxError(
            problem_at, f"YAML syntax error: {problem[6:]}: no anchor of that name before it"
        )
    detail = f"{problem} ({context})" if context else problem
    return YamlSyntaxError(problem_at, f"YAML syntax error: {detail}")


class _Builder:
    """Turns composed nodes into data, filling the source map and the issue list."""

    def __init__(self, loader: yaml.SafeLoader, source: SourceMap, issues: list[YamlIssue]):
        self._loader = loader
        self._source = source
        self._issues = issues
        self._built = 0
        self._open: set[int] = set()  # collections being built: an alias to one is a cycle
        self._merging: set[int] = set()  # mappings whose merge keys are being resolved
        self._reported: set[int] = set()  # key nodes already reported (anchors build twice)

    def build(self, node: yaml.Node, path: Path, key_at: Position | None) -> Any:
        self._built += 1
        if self._built > MAX_VALUES:
            # Deep inside some alias's expansion: the top-level key being built is the place
            # a reader can find.
            raise YamlSyntaxError(
                self._source.keys.get(path[:1]) or _pos(node.start_mark),
                f"YAML error: aliases expand the document to more than {MAX_VALUES} values",
            )
        empty = isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG and not node.value
        self._source.values[path] = key_at if empty and key_at else _pos(node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node)
        if id(node) in self._open:
            raise YamlSyntaxError(
                _pos(node.start_mark),
                "YAML error: the node anchored here contains an alias to itself",
            )
        self._open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i), None) for i, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)  # the composer makes no other kind
            return self._mapping(node, path)
        finally:
            self._open.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        try:
            return self._loader.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            # Custom tags (!Ref, !!python/...) and impossible values (a timestamp 2024-13-01).
            detail = exc.problem or "cannot read this value"
            if detail.startswith("could not determine a constructor for the tag"):
                detail = f"unsupported YAML tag {node.tag!r}; deploy.yaml holds plain values"
            raise YamlSyntaxError(_pos(node.start_mark), f"YAML error: {detail}") from None

    def _mapping(self, node: yaml.MappingNode, path: Path) -> dict[str, Any]:
        result: dict[str, Any] = {}
        entries = self._entries(node, path)
        for key, (key_node, value_node) in entries.items():
            child = (*path, key)
            key_at = _pos(key_node.start_mark)
            self._source.keys[child] = key_at
            result[key] = self.build(value_node, child, key_at)
        return result

    def _entries(
        self, node: yaml.MappingNode, path: Path
    ) -> dict[str, tuple[yaml.Node, yaml.Node]]:
        """The mapping's entries by key, merged keys first, own keys winning over them."""
        merged: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        own: dict[str, tuple[yaml.Node, yaml.Node]] = {}
        self._merging.add(id(node))
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                for source in self._merge_sources(value_node, path):
                    if id(source) in self._open | self._merging:
                        raise YamlSyntaxError(
                            _pos(source.start_mark),
                            "YAML error: '<<' merges the mapping anchored here into itself",
                        )
                    for merged_key, entry in self._entries(source, path).items():
                        merged.setdefault(merged_key, entry)  # the first mapping merged wins
                continue
            key = self._key(key_node, path)
            if key is None:
                continue
            if key in own:
                first = _pos(own[key][0].start_mark)
                where = f"line {first.line}"
                if first.line == key_node.start_mark.line + 1:  # a flow mapping on one line
                    where += f", column {first.col}"
                self._report(
                    key_node, (*path, key), f"duplicate key {key!r} (first defined at {where})"
                )
                continue
            own[key] = (key_node, value_node)
        self._merging.discard(id(node))
        return {**merged, **own}

    def _merge_sources(self, value_node: yaml.Node, path: Path) -> list[yaml.MappingNode]:
        if isinstance(value_node, yaml.MappingNode):
            return [value_node]
        if isinstance(value_node, yaml.SequenceNode) and all(
            isinstance(item, yaml.MappingNode) for item in value_node.value
        ):
            return list(value_node.value)
        self._report(value_node, path, "'<<' merges a mapping or a list of mappings only")
        return []

    def _key(self, key_node: yaml.Node, path: Path) -> str | None:
        """The key as text, or None (reported) when YAML does not read it as text."""
        if not isinstance(key_node, yaml.ScalarNode):
            self._report(key_node, path, "mapping keys must be plain text, not a list or mapping")
            return None
        key = self._scalar(key_node)
        if isinstance(key, str):
            return key
        self._report(
            key_node,
            (*path, key_node.value),
            f"YAML reads the key {key_node.value!r} as {_kind(key)}; "
            f'quote it ("{key_node.value}") to use it as text',
        )
        return None

    def _report(self, node: yaml.Node, path: Path, message: str) -> None:
        if id(node) not in self._reported:
            self._reported.add(id(node))
            self._issues.append(YamlIssue(_pos(node.start_mark), path, message))


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return "a number"
    return f"a {type(value).__name__}"
