"""The REST client's own rules: where the token may go, and what counts as an answer."""

from __future__ import annotations

import pytest

from deployer.github.api import GitHubApi, GitHubError, Response
from tests.github.fake_github import FakeGitHub


def test_a_link_to_another_host_is_not_followed(github: FakeGitHub) -> None:
    api = GitHubApi("ghs_token", github.url)
    with pytest.raises(GitHubError, match="outside"):
        api.get("http://collector.invalid/steal?page=2")
    assert github.requests == []


def test_the_base_url_must_be_http() -> None:
    with pytest.raises(GitHubError, match="not an http"):
        GitHubApi("ghs_token", "ftp://ghe.example/api/v3")


def test_link_headers_are_read_by_rel() -> None:
    response = Response(
        200,
        {"link": '<https://a/x?page=3>; rel="next", <https://a/x?page=9>; rel="last"'},
        [],
    )
    assert response.link("next") == "https://a/x?page=3"
    assert response.link("prev") is None


def test_a_refusal_keeps_githubs_message(github: FakeGitHub) -> None:
    api = GitHubApi("not-a-token", github.url)
    with pytest.raises(GitHubError, match="HTTP 401: Bad credentials") as error:
        api.get("repos/octo-org/diabetes-model/issues/1/comments")
    assert error.value.status == 401


def test_a_redirect_within_the_api_is_followed_with_the_token(github: FakeGitHub) -> None:
    old = "/repos/octo-org/old-name/issues/1/comments"
    github.moved[old] = f"{github.url}/repositories/712345678/issues/1/comments"
    answer = GitHubApi("ghs_token", github.url).get(old)
    assert answer.data == []
    moved = github.requests[-1]
    assert moved.path == "/repositories/712345678/issues/1/comments"
    assert moved.headers["authorization"] == "Bearer ghs_token"


def test_a_redirect_to_another_host_is_not_followed(github: FakeGitHub) -> None:
    """urllib would follow it and resend the Authorization header to that host."""
    assert github.blobs is not None
    github.moved["/repos/octo-org/diabetes-model"] = f"{github.blobs.url}/collect"
    with pytest.raises(GitHubError, match="outside the API"):
        GitHubApi("ghs_token", github.url).get("repos/octo-org/diabetes-model")
    assert github.blobs.requests == []
