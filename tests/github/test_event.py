"""The pull request of an event payload."""

from __future__ import annotations

import pytest

from deployer.github.event import pull_request_number
from tests.github.conftest import event_payload


@pytest.mark.parametrize(
    ("payload", "number"),
    [
        ("pull_request_opened.json", 42),
        ("pull_request_synchronize.json", 42),
        ("pull_request_synchronize_fork.json", 57),
        ("issue_comment_on_pull_request.json", 42),
        ("issue_comment_on_issue.json", None),  # a plain issue: nothing to comment on
        ("push.json", None),
    ],
)
def test_the_pull_request_comes_from_the_payload(payload: str, number: int | None) -> None:
    assert pull_request_number(event_payload(payload)) == number


def test_a_pull_request_target_event_has_the_same_shape() -> None:
    payload = event_payload("pull_request_synchronize_fork.json")
    assert pull_request_number({**payload, "action": "labeled"}) == 57


def test_a_malformed_number_is_no_pull_request() -> None:
    assert pull_request_number({"pull_request": {"number": "42"}}) is None
    assert pull_request_number({"pull_request": {"number": True}}) is None
