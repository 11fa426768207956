"""A small GitHub REST client on ``urllib.request``: JSON in and out, pagination, retries.

Retries are bounded twice over: server errors (5xx, a dropped connection) are retried a few
times with exponential backoff; rate limits are waited out as GitHub documents (retry-after,
else x-ratelimit-reset when x-ratelimit-remaining is 0, else a minute), but only within a total
waiting budget, so that a job never hangs for the hour a primary rate limit may take to reset.
``sleep`` and ``clock`` are injectable: tests wait for nothing.

Redirects are never followed by urllib itself: it would resend the ``Authorization`` header to
whatever host a redirect names. A redirect within the API's own origin (a renamed repository)
is followed with the token; one elsewhere (an artifact's signed download URL) is fetched by
``download`` without it.
"""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

from deployer import __version__
from deployer.errors import DeployerError, UserError
from deployer.events import Event, Sink, discard

DEFAULT_API_URL = "https://api.github.com"
API_VERSION = "2022-11-28"
SECONDARY_LIMIT_WAIT_S = 60.0  # GitHub: "wait for at least one minute before retrying"
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="([^"]+)"')
REPOSITORY = re.compile(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+")  # OWNER/NAME


class GitHubError(DeployerError):
    """A request GitHub refused or could not answer."""

    def __init__(self, message: str, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class PermissionDenied(GitHubError):
    """403 without a rate limit: the token may not do this (a fork's read-only token)."""


class RateLimited(GitHubError):
    """Still rate limited when the waiting budget ran out."""


class ServerUnavailable(GitHubError):
    """5xx or no answer, after the retries allowed."""


@dataclass(frozen=True)
class RetryPolicy:
    server_retries: int = 3  # after the first attempt: waits of 1, 2 then 4 seconds
    backoff_s: float = 1.0
    rate_limit_budget_s: float = 120.0  # total time spent waiting out rate limits
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.time  # epoch seconds, to read x-ratelimit-reset


@dataclass(frozen=True)
class Response:
    status: int
    headers: Mapping[str, str]  # names lower-cased
    data: Any  # the decoded JSON body, None when empty

    def link(self, rel: str) -> str | None:
        for url, rels in _LINK.findall(self.headers.get("link", "")):
            if rel in rels.split():
                return str(url)
        return None


@dataclass(frozen=True)
class _Raw:
    """One HTTP answer as it came, whatever its status."""

    status: int
    headers: Mapping[str, str]  # names lower-cased
    body: bytes

    def decoded(self, method: str, url: str) -> Response:
        try:
            data = json.loads(self.body) if self.body.strip() else None
        except ValueError:
            raise GitHubError(
                f"{method} {url}: HTTP {self.status} with a body that is not JSON", self.status
            ) from None
        return Response(self.status, self.headers, data)

    def error_response(self, method: str, url: str) -> Response:
        """For messages only: an error body that is not JSON counts as none."""
        try:
            return self.decoded(method, url)
        except GitHubError:
            return Response(self.status, self.headers, None)


class _KeepRedirects(urllib.request.HTTPRedirectHandler):
    """Hands every 3xx back as an answer instead of following it (with the token)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


@dataclass
class _Waits:
    """What one request has waited so far, across its attempts."""

    server_retries: int = 0
    rate_limited_s: float = 0.0
    redirects: int = 0


class GitHubApi:
    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_API_URL,
        *,
        policy: RetryPolicy | None = None,
        progress: Sink = discard,
        timeout_s: float = 30.0,
    ) -> None:
        # GitHub Enterprise Server serves the API under a path (https://ghe.example/api/v3):
        # every path is appended to the base URL, which is kept whole.
        self.base_url = base_url.rstrip("/")
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise GitHubError(f"GITHUB_API_URL is not an http(s) URL: {base_url!r}")
        self._origin = (parts.scheme, parts.netloc)
        self._token = token
        self._policy = policy or RetryPolicy()
        self._progress = progress
        self._timeout_s = timeout_s
        # Built per client, so proxies come from the environment as it is now (runners behind
        # a proxy set HTTPS_PROXY).
        self._opener = urllib.request.build_opener(_KeepRedirects)

    @property
    def policy(self) -> RetryPolicy:
        return self._policy

    @property
    def token(self) -> str:
        return self._token

    def get(self, path: str) -> Response:
        return self.request("GET", path)

    def post(self, path: str, body: Mapping[str, Any]) -> Response:
        # Not retried on a 5xx or a dropped connection: GitHub may have created the resource
        # all the same. The caller decides (the sticky comment looks again before retrying).
        return self.request("POST", path, body, retry_server_errors=False)

    def patch(self, path: str, body: Mapping[str, Any]) -> Response:
        return self.request("PATCH", path, body)

    def delete(self, path: str) -> Response:
        return self.request("DELETE", path)

    def paginate(self, path: str) -> Iterator[Any]:
        """Every item of a list endpoint, page after page by the ``Link: rel="next"`` header."""
        url: str | None = path
        while url is not None:
            response = self.get(url)
            if not isinstance(response.data, list):
                raise GitHubError(f"GitHub answered {url} with no list")
            yield from response.data
            url = response.link("next")

    def request(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None = None,
        *,
        retry_server_errors: bool = True,
    ) -> Response:
        url = self._url(path)
        raw = self._call(method, url, body, retry_server_errors)
        if raw.status in REDIRECTS:
            where = raw.headers.get("location", "")
            raise GitHubError(f"{method} {url}: redirected to {where}, outside the API", raw.status)
        return raw.decoded(method, url)

    def download(self, path: str, max_bytes: int) -> bytes:
        """The body of a download endpoint (an artifact's zip archive).

        GitHub answers with a 302 to a signed URL on another host, valid for a minute, which is
        fetched without the token; a server that answers with the body itself is read as is.
        """
        url = self._url(path)
        raw = self._call("GET", url, None, True, max_bytes=max_bytes)
        if raw.status not in REDIRECTS:
            return raw.body
        location = urljoin(url, raw.headers.get("location", ""))
        if urlsplit(location).scheme not in ("http", "https"):
            raise GitHubError(f"GET {url}: redirected to {location!r}, not an http(s) URL")
        request = urllib.request.Request(location, headers={"User-Agent": _user_agent()})
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as answer:
                return _read_limited(answer, max_bytes, location)
        except urllib.error.HTTPError as error:
            raise GitHubError(f"GET {_without_query(location)}: HTTP {error.code}") from None
        except (OSError, http.client.HTTPException) as error:
            reason = getattr(error, "reason", error)
            where = _without_query(location)
            raise ServerUnavailable(f"GET {where}: no answer ({reason})") from None

    def _call(
        self,
        method: str,
        url: str,
        body: Mapping[str, Any] | None,
        retry_server_errors: bool,
        max_bytes: int | None = None,
    ) -> _Raw:
        """A success or a redirect elsewhere; errors raised, retries and waits done here."""
        waits = _Waits()
        while True:
            try:
                raw = self._send(method, url, body, max_bytes)
            except (OSError, http.client.HTTPException) as error:
                # URLError, a timeout, a reset or a cut-short answer: nothing usable came back.
                reason = getattr(error, "reason", error)
                if not retry_server_errors:
                    raise ServerUnavailable(f"{method} {url}: no answer ({reason})") from None
                self._back_off(method, url, f"no answer ({reason})", waits)
                continue
            if raw.status < 300:
                return raw
            if raw.status in REDIRECTS and raw.headers.get("location"):
                target = urljoin(url, raw.headers["location"])
                if not self._same_origin(target) or method != "GET":
                    return raw
                waits.redirects += 1
                if waits.redirects > MAX_REDIRECTS:
                    raise GitHubError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")
                url = target
                continue
            response = raw.error_response(method, url)
            wait = _rate_limit_wait(response, self._policy.clock())
            if wait is not None:
                self._wait_rate_limit(method, url, wait, waits)
            elif response.status >= 500:
                if not retry_server_errors:
                    raise ServerUnavailable(_describe(method, url, response), response.status)
                self._back_off(method, url, f"HTTP {response.status}", waits)
            elif response.status == 403:
                raise PermissionDenied(_describe(method, url, response), 403)
            else:
                raise GitHubError(_describe(method, url, response), response.status)

    def _same_origin(self, url: str) -> bool:
        parts = urlsplit(url)
        return (parts.scheme, parts.netloc) == self._origin

    def _url(self, path: str) -> str:
        if not path.startswith(("http://", "https://")):
            return f"{self.base_url}/{path.lstrip('/')}"
        # A Link header's absolute URL: the token only ever goes to the API's own host.
        if not self._same_origin(path):
            raise GitHubError(f"GitHub pointed to {path}, outside {self.base_url}")
        return path

    def _send(
        self, method: str, url: str, body: Mapping[str, Any] | None, max_bytes: int | None
    ) -> _Raw:
        headers = {
            "Accept": "application/vnd.github+json",
            "Authorization": f"Bearer {self._token}",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": _user_agent(),
        }
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json; charset=utf-8"
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self._opener.open(request, timeout=self._timeout_s) as answer:
                raw = answer.read() if max_bytes is None else _read_limited(answer, max_bytes, url)
                return _Raw(answer.status, _lower(answer.headers), raw)
        except urllib.error.HTTPError as error:  # any status >= 300: an answer all the same
            try:
                raw = error.read()
            except (OSError, http.client.HTTPException):
                raw = b""
            return _Raw(error.code, _lower(error.headers), raw)

    def _back_off(self, method: str, url: str, why: str, waits: _Waits) -> None:
        if waits.server_retries >= self._policy.server_retries:
            raise ServerUnavailable(f"{method} {url}: {why}, {waits.server_retries + 1} attempts")
        delay = self._policy.backoff_s * 2**waits.server_retries
        waits.server_retries += 1
        self._progress(Event("detail", f"GitHub: {why}; retrying in {delay:g} s"))
        self._policy.sleep(delay)

    def _wait_rate_limit(self, method: str, url: str, wait: float, waits: _Waits) -> None:
        budget = self._policy.rate_limit_budget_s
        if waits.rate_limited_s + wait > budget:
            raise RateLimited(
                f"{method} {url}: rate limited for {wait:.0f} s more, beyond the "
                f"{budget:g} s this run may wait",
                429,
            )
        waits.rate_limited_s += wait
        self._progress(Event("detail", f"GitHub: rate limited; waiting {wait:.0f} s"))
        self._policy.sleep(wait)


def client_from_env(
    env: Mapping[str, str],
    *,
    token: str | None = None,
    policy: RetryPolicy | None = None,
    progress: Sink = discard,
) -> tuple[GitHubApi, str]:
    """A client for the job's repository, as GitHub Actions describes it, and that repository.

    GITHUB_API_URL is GitHub Enterprise Server's API when the job runs there.
    """
    token = token or env.get("GITHUB_TOKEN", "")
    if not token:
        raise UserError("no token: set GITHUB_TOKEN (the workflow's github.token will do)")
    repo = env.get("GITHUB_REPOSITORY", "")
    if not REPOSITORY.fullmatch(repo):
        raise UserError(f"GITHUB_REPOSITORY is not OWNER/NAME: {repo!r}")
    base_url = env.get("GITHUB_API_URL") or DEFAULT_API_URL
    return GitHubApi(token, base_url, policy=policy, progress=progress), repo


def _user_agent() -> str:
    return f"deployer/{__version__}"


def _lower(headers: Any) -> dict[str, str]:
    return {k.lower(): v for k, v in (headers or {}).items()}


def _read_limited(answer: Any, max_bytes: int, url: str) -> bytes:
    data: bytes = answer.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise GitHubError(f"GET {_without_query(url)}: more than {max_bytes} bytes")
    return data


def _without_query(url: str) -> str:
    # A signed download URL carries its signature in the query: keep it out of messages.
    return url.split("?", 1)[0]


def _rate_limit_wait(response: Response, now: float) -> float | None:
    """Seconds to wait before retrying, when the response is a rate limit; else None."""
    if response.status not in (403, 429):
        return None
    headers = response.headers
    if "retry-after" in headers:
        return _seconds(headers["retry-after"], default=SECONDARY_LIMIT_WAIT_S)
    if headers.get("x-ratelimit-remaining") == "0":
        reset = _seconds(headers.get("x-ratelimit-reset", ""), default=now + 60)
        return max(reset - now, 0.0) + 1.0  # the reset second itself may still be limited
    if response.status == 429 or "rate limit" in _message(response).lower():
        return SECONDARY_LIMIT_WAIT_S
    return None


def _seconds(text: str, default: float) -> float:
    try:
        return max(float(text), 0.0)
    except ValueError:
        return default


def _message(response: Response) -> str:
    data = response.data
    return str(data.get("message", "")) if isinstance(data, dict) else ""


def _describe(method: str, url: str, response: Response) -> str:
    message = _message(response)
    return f"{method} {url}: HTTP {response.status}" + (f": {message}" if message else "")
