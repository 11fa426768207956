"""How an answer is judged against a test's ``expect``: status, headers, content type,
JSON (numbers within a tolerance) and the body's SHA-256, each failure in words."""

from __future__ import annotations

import http.client
import json
import math
from dataclasses import dataclass
from typing import Any

from deployer.config.model import ScoringTest

MAX_SHOWN = 300  # characters of an unexpected body kept in a result


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes  # the first MAX_KEPT bytes
    size: int  # every byte of the body
    sha256: str
    ttfb_ms: float
    total_ms: float

    @property
    def complete(self) -> bool:
        return self.size == len(self.body)


def expectation_failures(test: ScoringTest, answer: Answer) -> list[str]:
    """Each expectation the answer does not meet, in words: what was expected, what came.
    A wrong status is the only failure given (the others would follow from it)."""
    expect = test.expect
    if answer.status != expect.status:
        return [f"status {answer.status}, expected {expect.status}: {_shown(answer)}"]
    failures = []
    for name, value in expect.headers.items():
        actual = answer.headers.get_all(name)
        if actual is None:
            failures.append(f"header {name}: expected {value!r}, got no such header")
        elif ", ".join(actual) != value:
            failures.append(f"header {name}: expected {value!r}, got {', '.join(actual)!r}")
    if expect.content_type is not None:
        actual_type = answer.headers.get("Content-Type")
        if actual_type is None:
            failures.append(
                f"content type: expected {expect.content_type!r}, got no Content-Type header"
            )
        elif not media_type_matches(actual_type, expect.content_type):
            failures.append(f"content type: expected {expect.content_type!r}, got {actual_type!r}")
    if expect.json_ is not None:
        failures += _json_failures(answer, expect.json_, expect.tolerance)
    if expect.body_sha256 is not None and answer.sha256 != expect.body_sha256.lower():
        failures.append(
            f"body sha256: expected {expect.body_sha256.lower()}, got {answer.sha256} "
            f"({answer.size} bytes{_kind(answer)})"
        )
    return failures


def _json_failures(answer: Answer, expected: Any, tolerance: float) -> list[str]:
    if not answer.complete:
        return [f"response is too large to compare as JSON: {answer.size} bytes"]
    try:
        actual = json.loads(answer.body)
    except ValueError:
        return [f"response is not JSON: {_shown(answer)}"]
    mismatch = json_mismatch(actual, expected, tolerance)
    return [mismatch] if mismatch else []


def media_type_matches(actual: str, expected: str) -> bool:
    """``actual`` (a Content-Type header) has ``expected``'s type/subtype, case ignored,
    and each parameter ``expected`` gives (a charset's value ignores case too)."""
    actual_type, actual_params = _parse_media_type(actual)
    expected_type, expected_params = _parse_media_type(expected)
    if actual_type != expected_type:
        return False
    for name, value in expected_params.items():
        found = actual_params.get(name)
        fold = str.lower if name == "charset" else str
        if found is None or fold(found) != fold(value):
            return False
    return True


def _parse_media_type(text: str) -> tuple[str, dict[str, str]]:
    media_type, *params = text.split(";")
    parsed = {}
    for param in params:
        name, _, value = param.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1]
        parsed[name.strip().lower()] = value
    return media_type.strip().lower(), parsed


def json_mismatch(actual: Any, expected: Any, tolerance: float, path: str = "$") -> str:
    """Where ``actual`` differs from ``expected`` (numbers within ``tolerance``), or ""."""
    if _is_number(expected) and _is_number(actual):
        if math.isclose(actual, expected, rel_tol=0.0, abs_tol=tolerance) or actual == expected:
            return ""
        return f"{path}: {actual!r} differs from {expected!r} by more than {tolerance}"
    if isinstance(expected, list) and isinstance(actual, list):
        if len(actual) != len(expected):
            return f"{path}: {len(actual)} items, expected {len(expected)}"
        for index, (a, e) in enumerate(zip(actual, expected, strict=True)):
            if found := json_mismatch(a, e, tolerance, f"{path}[{index}]"):
                return found
        return ""
    if isinstance(expected, dict) and isinstance(actual, dict):
        if sorted(actual) != sorted(expected):
            return f"{path}: keys {sorted(actual)}, expected {sorted(expected)}"
        for key in expected:
            if found := json_mismatch(actual[key], expected[key], tolerance, f"{path}.{key}"):
                return found
        return ""
    if type(actual) is not type(expected) or actual != expected:
        return f"{path}: {_text(json.dumps(actual).encode())}, expected {json.dumps(expected)}"
    return ""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _shown(answer: Answer) -> str:
    """An unexpected answer body, for a message: its start as text, or what it is."""
    if not answer.size:
        return "(empty body)"
    head = answer.body[: MAX_SHOWN * 4]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.start < len(head) - 3 or len(head) == answer.size:
            return f"({answer.size} bytes{_kind(answer)}, not text)"
        text = head[: exc.start].decode("utf-8")  # a character cut at the end of head
    cut = len(text) > MAX_SHOWN or len(head) < answer.size
    return text[:MAX_SHOWN] + ("…" if cut else "")


def _kind(answer: Answer) -> str:
    content_type = answer.headers.get("Content-Type")
    return f" of {content_type}" if content_type else ""


def _text(data: bytes) -> str:
    text = data.decode("utf-8", "replace")
    return text if len(text) <= MAX_SHOWN else text[:MAX_SHOWN] + "…"
