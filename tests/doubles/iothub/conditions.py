"""Target conditions of IoT Hub configurations (the WHERE clause of IoT Hub's query language),
as much of them as deploy.yaml's ``target_condition`` needs, evaluated against twins.

Supported: comparisons ``path op value`` with ``=``, ``!=``, ``<>``, ``<``, ``<=``, ``>``,
``>=``; ``path IN [v1, v2, ...]``; ``AND``, ``OR``, ``NOT`` (any case) and parentheses. A path
is dotted names into the device twin: ``deviceId``, ``tags.<...>``,
``properties.desired.<...>``/``properties.reported.<...>``, ``capabilities.iotEdge``,
``status``, ``connectionState``. Values: strings in single or double quotes, numbers,
``true``, ``false``, ``null``. A path the twin lacks matches nothing (not even ``!=``), as in
IoT Hub, where a comparison with an undefined value is undefined.

Not supported (a 400 ArgumentInvalid from the double where IoT Hub would accept them):
functions (``IS_DEFINED``, ``STARTSWITH``, ...), arithmetic, ``[[...]]`` escaped names,
``devices.modules`` conditions on module twins.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*")
      | (?P<number>-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
      | (?P<op><>|!=|<=|>=|=|<|>)
      | (?P<punct>[()\[\],])
      | (?P<name>[A-Za-z_$][A-Za-z0-9_$\-]*(?:\.[A-Za-z_$][A-Za-z0-9_$\-]*)*)
    )""",
    re.VERBOSE,
)
KEYWORDS = {"and", "or", "not", "in", "true", "false", "null"}
UNDEFINED = object()


class ConditionError(ValueError):
    """The condition does not parse (the double's subset of the query language)."""


@dataclass(frozen=True)
class Token:
    kind: str  # string, number, op, punct, name, keyword, end
    value: Any


def tokens(text: str) -> list[Token]:
    found: list[Token] = []
    position = 0
    text = text.rstrip()
    while position < len(text):
        match = TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise ConditionError(f"unexpected {text[position : position + 10]!r}")
        position = match.end()
        kind = match.lastgroup or ""
        value: Any = match.group(kind)
        if kind == "string":
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        elif kind == "number":
            value = float(value) if re.search(r"[.eE]", value) else int(value)
        elif kind == "name" and value.lower() in KEYWORDS:
            kind, value = "keyword", value.lower()
        found.append(Token(kind, value))
    found.append(Token("end", None))
    return found


class Condition:
    """A parsed target condition; ``matches(twin)`` evaluates it."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._tokens = tokens(text)
        self._at = 0
        self.tree = self._or()
        if self._peek().kind != "end":
            raise ConditionError(f"unexpected {self._peek().value!r}")

    def matches(self, twin: dict[str, Any]) -> bool:
        return _evaluate(self.tree, twin) is True

    # Parsing ------------------------------------------------------------------------------
    def _peek(self) -> Token:
        return self._tokens[self._at]

    def _next(self) -> Token:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _keyword(self, word: str) -> bool:
        token = self._peek()
        if token.kind == "keyword" and token.value == word:
            self._at += 1
            return True
        return False

    def _or(self) -> Any:
        node = self._and()
        while self._keyword("or"):
            node = ("or", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._not()
        while self._keyword("and"):
            node = ("and", node, self._not())
        return node

    def _not(self) -> Any:
        if self._keyword("not"):
            return ("not", self._not())
        if self._peek() == Token("punct", "("):
            self._next()
            node = self._or()
            if self._next() != Token("punct", ")"):
                raise ConditionError("missing ')'")
            return node
        return self._comparison()

    def _comparison(self) -> Any:
        left = self._next()
        if left.kind != "name":
            raise ConditionError(f"expected a property path, found {left.value!r}")
        if self._keyword("in"):
            if self._next() != Token("punct", "["):
                raise ConditionError("expected '[' after IN")
            values = [self._value()]
            while self._peek() == Token("punct", ","):
                self._next()
                values.append(self._value())
            if self._next() != Token("punct", "]"):
                raise ConditionError("missing ']'")
            return ("in", left.value, values)
        op = self._next()
        if op.kind != "op":
            raise ConditionError(f"expected a comparison after {left.value!r}")
        return ("cmp", op.value, left.value, self._value())

    def _value(self) -> Any:
        token = self._next()
        if token.kind in ("string", "number"):
            return token.value
        if token.kind == "keyword" and token.value in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.value]
        raise ConditionError(f"expected a value, found {token.value!r}")


def _lookup(twin: dict[str, Any], path: str) -> Any:
    node: Any = twin
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return UNDEFINED
        node = node[part]
    return node


def _evaluate(node: Any, twin: dict[str, Any]) -> bool | None:
    kind = node[0]
    if kind == "or":
        left, right = _evaluate(node[1], twin), _evaluate(node[2], twin)
        return True if True in (left, right) else (None if None in (left, right) else False)
    if kind == "and":
        left, right = _evaluate(node[1], twin), _evaluate(node[2], twin)
        return False if False in (left, right) else (None if None in (left, right) else True)
    if kind == "not":
        inner = _evaluate(node[1], twin)
        return None if inner is None else not inner
    if kind == "in":
        value = _lookup(twin, node[1])
        return None if value is UNDEFINED else value in node[2]
    _, op, path, expected = node
    value = _lookup(twin, path)
    if value is UNDEFINED:
        return None
    if op == "=":
        return bool(value == expected)
    if op in ("!=", "<>"):
        return bool(value != expected)
    comparable = (isinstance(value, str) and isinstance(expected, str)) or (
        isinstance(value, int | float)
        and isinstance(expected, int | float)
        and not isinstance(value, bool)
    )
    if not comparable:
        return None
    return {
        "<": value < expected,
        "<=": value <= expected,
        ">": value > expected,
        ">=": value >= expected,
    }[op]
