"""A small, strict subset of the Kusto Query Language (KQL), parsed and executed for real, for
the Log Analytics double (tests/doubles/azure/log_analytics.py).

The subset (Kusto is case-sensitive: keywords, tables and columns are written as here)::

    query    := source ( "|" operator )*
    source   := Table | "union" Table ( "," Table )*
    operator := "where" column op literal
              | ( "order" | "sort" ) "by" key ( "," key )*
              | ( "take" | "limit" ) integer
              | "project" column ( "," column )*
    key      := column [ "asc" | "desc" ] [ "nulls" ( "first" | "last" ) ]
    op       := "==" | "!=" | "=~" | "!~" | ">" | ">=" | "<" | "<="
    literal  := 'string' | "string" | integer | datetime(...) | ago(timespan)

``timespan`` is a number and a unit (``5m``, ``1.5h``, ``2d``, ``30s``, ``100ms``...); a
``datetime(...)`` holds an ISO 8601 date and time (UTC unless it carries an offset), with up to
7 fractional digits: Kusto's precision is the tick (100 ns), and so is this module's. Newlines,
spaces and ``//`` comments are free.

What Kusto does and this module does too: ``order by`` without a direction is descending;
``asc`` puts nulls first and ``desc`` last unless ``nulls first|last`` says otherwise; ``=~``
and ``!~`` compare strings case-insensitively; a comparison with null is false; ``union``
gives the columns in order of first appearance, and a row of a table without a column has
null there (an empty string for a string column: Kusto has no null string).

Anything outside the subset, even valid KQL (``summarize``, ``and``, ``extend``, ``project a =
b``, a real literal...), is a **syntax error** at the first token not understood, in Kusto's
words ("Query could not be parsed at 'x' on line [l,p]", p counted from 0): the double
refuses what it cannot execute rather than guess. An unknown table or column is a
**semantic error** ("'where' operator: Failed to resolve column or scalar expression named
'x'"), and so is a comparison between types Kusto does not compare ("Cannot compare values of
types string and long. Try adding explicit casts").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import eq, ge, gt, le, lt, ne
from typing import Any

TICKS_PER_SECOND = 10_000_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# Kusto's timespan units, in ticks.
UNITS: dict[str, int] = {
    **dict.fromkeys(("d", "day", "days"), 86_400 * TICKS_PER_SECOND),
    **dict.fromkeys(("h", "hr", "hrs", "hour", "hours"), 3_600 * TICKS_PER_SECOND),
    **dict.fromkeys(("m", "min", "minute", "minutes"), 60 * TICKS_PER_SECOND),
    **dict.fromkeys(("s", "sec", "second", "seconds"), TICKS_PER_SECOND),
    **dict.fromkeys(("ms", "milli", "millis", "millisecond", "milliseconds"), 10_000),
    **dict.fromkeys(("microsecond", "microseconds"), 10),
    **dict.fromkeys(("tick", "ticks"), 1),
}
ISO_DATETIME = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})"
    r"(?:[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,7}))?)?)?"
    r"(Z|[+-]\d{2}:\d{2})?$"
)
COMPARISONS = ("==", "!=", "=~", "!~", ">=", "<=", ">", "<")
CASE_INSENSITIVE = ("=~", "!~")
OPERATORS = {"==": eq, "!=": ne, ">": gt, ">=": ge, "<": lt, "<=": le}
NUMERIC = ("int", "long", "real")
SYNTAX_CODE = "SYN0002"  # Kusto's "Query could not be parsed"
RESOLVE_CODE = "SEM0100"  # Kusto's "Failed to resolve ... named 'x'"
TYPE_CODE = "SEM0000"  # placeholder: the code of a type mismatch was not found in any source


# Ticks -----------------------------------------------------------------------------------
def ticks_of(moment: datetime) -> int:
    """100 ns units since 1970-01-01 UTC (``moment`` must carry a time zone)."""
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone")
    return (moment - EPOCH) // timedelta(microseconds=1) * 10


def format_ticks(ticks: int) -> str:
    """As the service prints a datetime: ``2026-12-02T07:00:00.1234567Z``."""
    seconds, fraction = divmod(ticks, TICKS_PER_SECOND)
    moment = EPOCH + timedelta(seconds=seconds)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{fraction:07d}Z"


def parse_datetime(text: str) -> int | None:
    """Ticks of an ISO 8601 date and time (UTC when it has no offset), None if malformed."""
    found = ISO_DATETIME.match(text.strip())
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    try:
        moment = datetime(
            int(year),
            int(month),
            int(day),
            int(hour or 0),
            int(minute or 0),
            int(second or 0),
            tzinfo=UTC,
        )
    except ValueError:
        return None
    ticks = ticks_of(moment) + int((fraction or "").ljust(7, "0"))
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = int(zone[1:3]) * 3_600 + int(zone[4:6]) * 60
        ticks -= sign * offset * TICKS_PER_SECOND
    return ticks


# Errors ----------------------------------------------------------------------------------
class KqlError(Exception):
    """A query Kusto refuses: ``kind`` is "syntax" or "semantic"; ``code`` and ``message``
    are the innermost error's; ``line`` (from 1), ``pos`` (from 0) and ``token`` locate a
    syntax error."""

    def __init__(
        self, kind: str, code: str, message: str, *, line: int = 0, pos: int = 0, token: str = ""
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message
        self.line = line
        self.pos = pos
        self.token = token

    @classmethod
    def syntax(cls, token: Token) -> KqlError:
        text = token.text or "<EOF>"
        return cls(
            "syntax",
            SYNTAX_CODE,
            f"Query could not be parsed at '{text}' on line [{token.line},{token.pos}]",
            line=token.line,
            pos=token.pos,
            token=text,
        )

    @classmethod
    def unresolved(cls, operator: str, name: str, what: str) -> KqlError:
        prefix = f"'{operator}' operator: " if operator else ""
        return cls("semantic", RESOLVE_CODE, f"{prefix}Failed to resolve {what} named '{name}'")

    @classmethod
    def mismatch(cls, left: str, right: str) -> KqlError:
        return cls(
            "semantic",
            TYPE_CODE,
            f"Cannot compare values of types {left} and {right}. Try adding explicit casts",
        )

    def innermost(self) -> dict[str, Any]:
        """The innermost ``innererror`` of the service's answer."""
        error: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.kind == "syntax":
            error |= {"line": self.line, "pos": self.pos, "token": self.token}
        return error


# Tokens ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Token:
    kind: str  # ident, string, number, timespan, datetime, op, punct, eof
    text: str  # as written ("" at the end)
    value: Any
    line: int
    pos: int


TOKEN_SPEC = re.compile(
    r"(?P<space>\s+)|(?P<comment>//[^\n]*)"
    r"|(?P<ident>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<number>-?\d+(?:\.\d+)?)(?P<unit>[A-Za-z]+)?"
    r"|(?P<op>==|!=|=~|!~|>=|<=|>|<)"
    r"|(?P<punct>[|,()=])"
)
ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    line, line_start, i = 1, 0, 0

    def token(kind: str, start: int, end: int, value: Any = None) -> Token:
        return Token(kind, text[start:end], value, line, start - line_start)

    while i < len(text):
        if text[i] in "'\"":
            value, end = _string(text, i, token("string", i, i + 1))
            tokens.append(token("string", i, end, value))
            i = end
            continue
        found = TOKEN_SPEC.match(text, i)
        if found is None:
            raise KqlError.syntax(token("punct", i, i + 1))
        end = found.end()
        if found.group("space") is not None:
            for offset, char in enumerate(found.group("space")):
                if char == "\n":
                    line, line_start = line + 1, i + offset + 1
        elif found.group("ident") is not None:
            tokens.append(_identifier(text, i, end, token("ident", i, end)))
            if tokens[-1].kind == "datetime":
                end = i + len(tokens[-1].text)
        elif found.group("number") is not None:
            tokens.append(_number(found, token("number", i, end)))
        elif found.group("comment") is None:
            kind = "op" if found.group("op") is not None else "punct"
            tokens.append(token(kind, i, end, found.group()))
        i = end
    tokens.append(Token("eof", "", None, line, len(text) - line_start))
    return tokens


def _string(text: str, start: int, at: Token) -> tuple[str, int]:
    quote, i = text[start], start + 1
    chars: list[str] = []
    while i < len(text) and text[i] != "\n":
        char = text[i]
        if char == quote:
            return "".join(chars), i + 1
        if char == "\\":
            escaped = ESCAPES.get(text[i + 1 : i + 2])
            if escaped is None:
                raise KqlError.syntax(Token("punct", text[i : i + 2], None, at.line, at.pos))
            chars.append(escaped)
            i += 2
            continue
        chars.append(char)
        i += 1
    raise KqlError.syntax(at)  # not closed on its line


def _identifier(text: str, start: int, end: int, at: Token) -> Token:
    """An identifier, or a whole ``datetime(...)`` literal."""
    if at.text != "datetime":
        return at
    opening = re.compile(r"\s*\(").match(text, end)
    if opening is None:
        return at
    closing = text.find(")", opening.end())
    if closing < 0:
        raise KqlError.syntax(at)
    literal = text[start : closing + 1]
    ticks = parse_datetime(text[opening.end() : closing])
    found = Token("datetime", literal, ticks, at.line, at.pos)
    if ticks is None:
        raise KqlError.syntax(found)
    return found


def _number(found: re.Match[str], at: Token) -> Token:
    number, unit = found.group("number"), found.group("unit")
    if unit is not None:
        if unit not in UNITS:
            raise KqlError.syntax(at)
        return Token("timespan", at.text, round(float(number) * UNITS[unit]), at.line, at.pos)
    if "." in number:
        raise KqlError.syntax(at)  # a real literal: outside the subset
    return Token("number", at.text, int(number), at.line, at.pos)


# The parsed query ------------------------------------------------------------------------
@dataclass(frozen=True)
class Literal:
    type: str  # string, long, datetime
    value: Any  # str, int, ticks; for ago(): the timespan in ticks
    ago: bool = False


@dataclass(frozen=True)
class Where:
    column: Token
    op: str
    literal: Literal


@dataclass(frozen=True)
class SortKey:
    column: Token
    descending: bool
    nulls_first: bool


@dataclass(frozen=True)
class Order:
    keyword: str  # order or sort
    keys: tuple[SortKey, ...]


@dataclass(frozen=True)
class Take:
    count: int


@dataclass(frozen=True)
class Project:
    columns: tuple[Token, ...]


Operator = Where | Order | Take | Project


@dataclass(frozen=True)
class Query:
    tables: tuple[Token, ...]
    union: bool
    operators: tuple[Operator, ...]
    first_operator: str  # the name of the first piped operator ("" if none)


def parse(text: str) -> Query:
    return _Parser(tokenize(text)).query()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    @property
    def current(self) -> Token:
        return self.tokens[self.i]

    def take(self) -> Token:
        token = self.tokens[self.i]
        self.i += 1
        return token

    def accept(self, text: str) -> bool:
        if self.current.kind in ("ident", "punct", "op") and self.current.text == text:
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> Token:
        if not self.accept(text):
            raise KqlError.syntax(self.current)
        return self.tokens[self.i - 1]

    def name(self) -> Token:
        if self.current.kind != "ident":
            raise KqlError.syntax(self.current)
        return self.take()

    def query(self) -> Query:
        union = self.accept("union")
        tables = [self.name()]
        while union and self.accept(","):
            tables.append(self.name())
        operators: list[Operator] = []
        first = ""
        while self.accept("|"):
            first = first or self.current.text
            operators.append(self.operator())
        if self.current.kind != "eof":
            raise KqlError.syntax(self.current)
        return Query(tuple(tables), union, tuple(operators), first)

    def operator(self) -> Operator:
        keyword = self.name()
        if keyword.text == "where":
            column = self.name()
            if self.current.kind != "op":
                raise KqlError.syntax(self.current)
            return Where(column, self.take().text, self.literal())
        if keyword.text in ("order", "sort"):
            self.expect("by")
            keys = [self.sort_key()]
            while self.accept(","):
                keys.append(self.sort_key())
            return Order(keyword.text, tuple(keys))
        if keyword.text in ("take", "limit"):
            count = self.current
            if count.kind != "number" or count.value < 0:
                raise KqlError.syntax(count)
            self.take()
            return Take(count.value)
        if keyword.text == "project":
            columns = [self.name()]
            while self.accept(","):
                columns.append(self.name())
            return Project(tuple(columns))
        raise KqlError.syntax(keyword)

    def sort_key(self) -> SortKey:
        column = self.name()
        descending = not self.accept("asc")
        if descending:
            self.accept("desc")
        nulls_first = not descending
        if self.accept("nulls"):
            if self.accept("first"):
                nulls_first = True
            else:
                self.expect("last")
                nulls_first = False
        return SortKey(column, descending, nulls_first)

    def literal(self) -> Literal:
        token = self.current
        if token.kind == "string":
            self.take()
            return Literal("string", token.value)
        if token.kind == "number":
            self.take()
            return Literal("long", token.value)
        if token.kind == "datetime":
            self.take()
            return Literal("datetime", token.value)
        if token.kind == "ident" and token.text == "ago":
            self.take()
            self.expect("(")
            span = self.current
            if span.kind != "timespan":
                raise KqlError.syntax(span)
            self.take()
            self.expect(")")
            return Literal("datetime", span.value, ago=True)
        raise KqlError.syntax(token)


# Execution -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    name: str
    type: str  # Kusto's: datetime, string, int, long, real, bool, dynamic


@dataclass
class Result:
    columns: list[Column]
    rows: list[list[Any]]  # datetimes as ticks, dynamic values as Python values


@dataclass(frozen=True)
class Table:
    schema: tuple[Column, ...]
    rows: Sequence[Mapping[str, Any]]  # a missing column is its type's null


def null_of(kusto_type: str) -> Any:
    """What an absent value is: Kusto has no null string, an empty one stands for it."""
    return "" if kusto_type == "string" else None


def execute(query: Query, tables: Mapping[str, Table], now: int) -> Result:
    """Runs ``query`` on ``tables`` (by name); ``now`` (ticks) is ``ago()``'s reference."""
    columns: list[Column] = []
    sources: list[Table] = []
    for name in query.tables:
        table = tables.get(name.text)
        if table is None:
            where = "union" if query.union else query.first_operator
            raise KqlError.unresolved(where, name.text, "table or column expression")
        sources.append(table)
        known = {column.name: column for column in columns}
        for column in table.schema:
            if column.name not in known:
                columns.append(column)
            elif known[column.name].type != column.type:
                raise NotImplementedError(f"union of {column.name} with two types")
    rows = [
        [row.get(column.name, null_of(column.type)) for column in columns]
        for table in sources
        for row in table.rows
    ]
    result = Result(columns, rows)
    for operator in query.operators:
        result = _apply(operator, result, now)
    return result


def _index(result: Result, column: Token, operator: str) -> int:
    for i, known in enumerate(result.columns):
        if known.name == column.text:
            return i
    what = "column or scalar expression" if operator == "where" else "scalar expression"
    raise KqlError.unresolved(operator, column.text, what)


def _apply(operator: Operator, result: Result, now: int) -> Result:
    if isinstance(operator, Where):
        i = _index(result, operator.column, "where")
        column_type = result.columns[i].type
        _check_comparable(column_type, operator.op, operator.literal.type)
        literal = operator.literal
        value = now - literal.value if literal.ago else literal.value
        rows = [row for row in result.rows if _compare(row[i], operator.op, value)]
        return Result(result.columns, rows)
    if isinstance(operator, Order):
        rows = list(result.rows)
        for key in reversed(operator.keys):
            i = _index(result, key.column, operator.keyword)
            if result.columns[i].type == "dynamic":
                raise KqlError(
                    "semantic",
                    TYPE_CODE,
                    f"'{operator.keyword}' operator: key can't be of dynamic type",
                )
            present = [row for row in rows if row[i] is not None]
            present.sort(key=lambda row: row[i], reverse=key.descending)  # stable
            absent = [row for row in rows if row[i] is None]
            rows = absent + present if key.nulls_first else present + absent
        return Result(result.columns, rows)
    if isinstance(operator, Take):
        return Result(result.columns, result.rows[: operator.count])
    indexes = [_index(result, column, "project") for column in operator.columns]
    if len(set(indexes)) != len(indexes):
        raise KqlError.syntax(operator.columns[-1])  # Kusto would rename: outside the subset
    return Result(
        [result.columns[i] for i in indexes], [[row[i] for i in indexes] for row in result.rows]
    )


def _check_comparable(column_type: str, op: str, literal_type: str) -> None:
    if column_type == "string":
        fits = literal_type == "string" and op in ("==", "!=", *CASE_INSENSITIVE)
    elif column_type in NUMERIC:
        fits = literal_type == "long" and op not in CASE_INSENSITIVE
    elif column_type == "datetime":
        fits = literal_type == "datetime" and op not in CASE_INSENSITIVE
    else:
        fits = False
    if not fits:
        raise KqlError.mismatch(column_type, literal_type)


def _compare(value: Any, op: str, literal: Any) -> bool:
    if value is None:
        return False  # a comparison with null is null: the row does not pass
    if op in CASE_INSENSITIVE:
        equal = str(value).casefold() == str(literal).casefold()
        return equal if op == "=~" else not equal
    return bool(OPERATORS[op](value, literal))
