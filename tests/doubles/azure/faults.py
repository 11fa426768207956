"""Faults on demand for the ARM double, on the model of tests/doubles/docker_engine.py: a
``Rule`` picks requests by method and a path pattern, and either

- **fails** them: answers as ARM answers an error (a status, ``{"error": {"code",
  "message"}}`` and headers such as ``Retry-After``) before the service sees the request; or
- **holds** them: the request waits until the test sets ``rule.released`` (then it is served
  as usual), so that a test can stop a deploy at an exact ARM call.

``matched`` is set when a rule fires (for a hold: when the request arrived and waits).
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field


@dataclass
class Rule:
    method: str
    path: str  # a regular expression, searched in the path (query included)
    action: str = "fail"  # "fail" or "hold"
    status: int = 500
    code: str = "InternalServerError"
    message: str = "Encountered internal server error. Please try again."
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1  # how many requests it applies to
    matched: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    seen: int = 0

    def matches(self, method: str, path: str) -> bool:
        if self.seen >= self.times or method != self.method.upper():
            return False
        return re.search(self.path, path, re.IGNORECASE) is not None


class Faults:
    """The rules in force; ``take`` finds the first that applies to a request."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []
        self._lock = threading.Lock()

    def add(self, rule: Rule) -> Rule:
        with self._lock:
            self.rules.append(rule)
        return rule

    def take(self, method: str, path: str) -> Rule | None:
        with self._lock:
            rule = next((r for r in self.rules if r.matches(method, path)), None)
            if rule is not None:
                rule.seen += 1
        if rule is not None:
            rule.matched.set()
        return rule

    def release_all(self) -> None:
        for rule in self.rules:
            rule.released.set()


@dataclass
class Stall:
    """A container group whose provisioning stops before its containers start: it stays
    ``Pending`` (its operation ``InProgress``) until ``released`` is set."""

    group: str  # a regular expression, searched in the group's name
    times: int = 1
    matched: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    seen: int = 0
