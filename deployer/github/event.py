"""The pull request a workflow run is about, read from its event payload ($GITHUB_EVENT_PATH)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def pull_request_number(payload: Mapping[str, Any]) -> int | None:
    """The pull request's number, or None when the event is not about one (a push).

    pull_request and pull_request_target (and their review events) carry
    ``pull_request.number``; issue_comment carries ``issue.number``, which is a pull request's
    only when ``issue.pull_request`` is set (a comment on a plain issue is not).
    """
    pull_request = payload.get("pull_request")
    if isinstance(pull_request, Mapping) and _is_number(pull_request.get("number")):
        return int(pull_request["number"])
    issue = payload.get("issue")
    if isinstance(issue, Mapping) and issue.get("pull_request") and _is_number(issue.get("number")):
        return int(issue["number"])
    return None


def default_branch(payload: Mapping[str, Any]) -> str | None:
    """The repository's default branch (where production deploys come from), if named."""
    repository = payload.get("repository")
    branch = repository.get("default_branch") if isinstance(repository, Mapping) else None
    return branch if isinstance(branch, str) and branch else None


def read_payload(path: Path) -> dict[str, Any]:
    """The event payload; an unreadable one is reported by the caller as no pull request."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path}: the event payload is not a JSON object")
    return data


def _is_number(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0
