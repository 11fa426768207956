"""A local stand-in for GitHub's REST API, the parts deployer uses, as GitHub documents them.

Issue comments: GET /repos/{owner}/{repo}/issues/{n}/comments (per_page, default 30 and at
most 100, page, and a Link header whose URLs use /repositories/{id}/, as GitHub's do), POST the
same path (201 and the comment), PATCH /repos/{owner}/{repo}/issues/comments/{id}, GET /user.
Artifacts: GET /repos/{owner}/{repo}/actions/artifacts (name, per_page; newest first, with
total_count), and GET .../actions/artifacts/{id}/zip, which answers 302 with a short-lived
signed URL on another host (here: a second server, ``blobs``, which refuses a request that
carries an Authorization header, as blob storage given a SAS does) or 410 once expired.

Tokens starting ghs_ are installation tokens (author github-actions[bot], 403 on /user);
others are users' tokens. Faults to inject: read-only tokens (403 "Resource not accessible by
integration" on writes), tokens without actions: read (403 on the artifact endpoints), N
server errors, rate-limit answers, a create that succeeds but answers 502. Requests without
the headers GitHub requires are refused.
"""

from __future__ import annotations

import io
import json
import re
import threading
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

REPOSITORY = "octo-org/diabetes-model"
REPOSITORY_ID = 712_345_678
BOT = {"login": "github-actions[bot]", "id": 41898282, "type": "Bot"}
COMMENT_LIMIT = 65_536
NOT_ACCESSIBLE = {
    "message": "Resource not accessible by integration",
    "documentation_url": "https://docs.github.com/rest/issues/comments#create-an-issue-comment",
    "status": "403",
}


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str  # with the query
    headers: dict[str, str]
    body: Any


@dataclass
class FakeGitHub:
    prefix: str = ""  # "/api/v3" for GitHub Enterprise Server
    url: str = ""
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # user token -> user
    read_only_tokens: set[str] = field(default_factory=set)
    # Faults, consumed one per request: answers to give before serving normally.
    server_errors: int = 0
    rate_limits: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    create_then_fail: int = 0  # creates answered 502 although the comment was created
    # Comments another run creates just before the next create is served: (body, user).
    racing_creates: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    no_actions_read: set[str] = field(default_factory=set)  # tokens without actions: read
    moved: dict[str, str] = field(default_factory=dict)  # path -> URL it answers 301 with
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    archives: dict[int, bytes] = field(default_factory=dict)  # artifact id -> zip
    blobs: Blobs | None = None
    next_id: int = 1_500_000_000
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add_artifact(
        self,
        name: str,
        files: dict[str, str],
        *,
        branch: str = "main",
        run_id: int = 9_100_000_001,
        sha: str = "a1b2c3d4e5f60718293a4b5c6d7e8f9012345678",
        expired: bool = False,
        fork: bool = False,
        created_at: str = "2024-05-01T12:00:00Z",
    ) -> dict[str, Any]:
        """An artifact a workflow run uploaded: its zip holds ``files`` (name -> text)."""
        self.next_id += 1
        artifact_id = self.next_id
        api = f"{self.url}/repos/{REPOSITORY}/actions/artifacts/{artifact_id}"
        archive = io.BytesIO()
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
            for file_name, text in files.items():
                bundle.writestr(file_name, text)
        self.archives[artifact_id] = archive.getvalue()
        artifact = {
            "id": artifact_id,
            "node_id": f"MDg6QXJ0aWZhY3Q{artifact_id}",
            "name": name,
            "size_in_bytes": len(self.archives[artifact_id]),
            "url": api,
            "archive_download_url": f"{api}/zip",
            "expired": expired,
            "digest": "sha256:" + "0" * 64,
            "created_at": created_at,
            "updated_at": created_at,
            "expires_at": "2024-07-30T12:00:00Z",
            "workflow_run": {
                "id": run_id,
                "repository_id": REPOSITORY_ID,
                "head_repository_id": REPOSITORY_ID + 1 if fork else REPOSITORY_ID,
                "head_branch": branch,
                "head_sha": sha,
            },
        }
        self.artifacts.append(artifact)
        return artifact

    def add_comment(self, number: int, body: str, user: dict[str, Any]) -> dict[str, Any]:
        self.next_id += 1
        comment_id = self.next_id
        api = f"{self.url}/repos/{REPOSITORY}"
        comment = {
            "id": comment_id,
            "node_id": f"IC_kwDOKmR{comment_id}",
            "url": f"{api}/issues/comments/{comment_id}",
            "html_url": f"https://github.com/{REPOSITORY}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{api}/issues/{number}",
            "body": body,
            "user": {**user, "site_admin": False},
            "created_at": "2024-05-02T10:00:00Z",
            "updated_at": "2024-05-02T10:00:00Z",
            "author_association": "CONTRIBUTOR" if user["type"] == "User" else "NONE",
        }
        self.comments.setdefault(number, []).append(comment)
        return comment

    def bodies(self, number: int) -> list[str]:
        return [c["body"] for c in self.comments.get(number, [])]

    def calls(self, method: str | None = None) -> list[Recorded]:
        return [r for r in self.requests if method is None or r.method == method]

    # --- routing -------------------------------------------------------------------------------

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Answer:
        body = json.loads(raw) if raw else None
        with self.lock:
            self.requests.append(Recorded(method, target, headers, body))
            return self._answer(method, target, headers, body)

    def _answer(self, method: str, target: str, headers: dict[str, str], body: Any) -> _Answer:
        missing = [
            name
            for name, value in (
                ("accept", "application/vnd.github+json"),
                ("x-github-api-version", "2022-11-28"),
            )
            if headers.get(name) != value
        ]
        if not headers.get("user-agent") or missing:
            return _Answer(403, {"message": f"Request forbidden: missing {missing or 'UA'}"})
        if target in self.moved:  # a renamed repository, say
            return _Answer(301, {"message": "Moved Permanently"}, {"location": self.moved[target]})
        if self.rate_limits:
            status, limit_headers = self.rate_limits.pop(0)
            message = "API rate limit exceeded for installation ID 4711."
            if "retry-after" in limit_headers:
                message = "You have exceeded a secondary rate limit. Please wait a few minutes."
            return _Answer(status, {"message": message}, limit_headers)
        if self.server_errors:
            self.server_errors -= 1
            return _Answer(502, {"message": "Server Error"})
        token = headers.get("authorization", "").removeprefix("Bearer ")
        user = BOT if token.startswith("ghs_") else self.users.get(token)
        if user is None:
            return _Answer(401, {"message": "Bad credentials"})
        parts = urlsplit(target)
        path = parts.path.removeprefix(self.prefix) if parts.path.startswith(self.prefix) else ""
        query = parse_qs(parts.query)
        writes = method in ("POST", "PATCH", "DELETE")
        if writes and token in self.read_only_tokens:
            return _Answer(403, NOT_ACCESSIBLE)
        if method == "GET" and path == "/user":
            return _Answer(403, NOT_ACCESSIBLE) if user is BOT else _Answer(200, user)
        repo = rf"/(?:repos/{re.escape(REPOSITORY)}|repositories/{REPOSITORY_ID})"
        if method == "GET" and re.fullmatch(repo + r"/actions/artifacts(?:/.*)?", path):
            if token in self.no_actions_read:
                return _Answer(403, NOT_ACCESSIBLE)
            if path.endswith("/actions/artifacts"):
                return self._list_artifacts(query)
            if match := re.fullmatch(repo + r"/actions/artifacts/(\d+)/zip", path):
                return self._download(int(match[1]))
        if match := re.fullmatch(repo + r"/issues/(\d+)/comments", path):
            number = int(match[1])
            if method == "GET":
                return self._list(number, query)
            if method == "POST":
                return self._create(number, body, user)
        if match := re.fullmatch(repo + r"/issues/comments/(\d+)", path):
            if method == "PATCH":
                return self._update(int(match[1]), body)
            if method == "DELETE":
                return self._delete(int(match[1]))
        return _Answer(404, {"message": "Not Found"})

    def _list(self, number: int, query: dict[str, list[str]]) -> _Answer:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        page = int(query.get("page", ["1"])[0])
        comments = self.comments.get(number, [])
        last = max((len(comments) + per_page - 1) // per_page, 1)
        links = []
        base = f"{self.url}/repositories/{REPOSITORY_ID}/issues/{number}/comments"
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page={page - 1}>; rel="prev"')
        if page < last:
            links.append(f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"')
            links.append(f'<{base}?per_page={per_page}&page={last}>; rel="last"')
        if page > 1:
            links.append(f'<{base}?per_page={per_page}&page=1>; rel="first"')
        headers = {"link": ", ".join(links)} if links else {}
        return _Answer(200, comments[(page - 1) * per_page : page * per_page], headers)

    def _list_artifacts(self, query: dict[str, list[str]]) -> _Answer:
        per_page = min(int(query.get("per_page", ["30"])[0]), 100)
        wanted = query.get("name", [None])[0]
        found = [a for a in reversed(self.artifacts) if wanted is None or a["name"] == wanted]
        return _Answer(200, {"total_count": len(found), "artifacts": found[:per_page]})

    def _download(self, artifact_id: int) -> _Answer:
        artifact = next((a for a in self.artifacts if a["id"] == artifact_id), None)
        if artifact is None:
            return _Answer(404, {"message": "Not Found"})
        if artifact["expired"]:
            return _Answer(410, {"message": "Artifact has expired"})
        assert self.blobs is not None
        signed = f"{self.blobs.url}/artifacts/{artifact_id}.zip?sv=2023-11-03&se=soon&sig=Zm9v"
        self.blobs.content[f"/artifacts/{artifact_id}.zip"] = self.archives[artifact_id]
        return _Answer(302, None, {"location": signed})

    def _create(self, number: int, body: Any, user: dict[str, Any]) -> _Answer:
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text:
            return _Answer(422, {"message": 'Invalid request.\n\n"body" wasn\'t supplied.'})
        if len(text) > COMMENT_LIMIT:
            return _too_long()
        while self.racing_creates:
            self.add_comment(number, *self.racing_creates.pop(0))
        comment = self.add_comment(number, text, user)
        if self.create_then_fail:
            self.create_then_fail -= 1
            return _Answer(502, {"message": "Server Error"})
        return _Answer(201, comment, {"location": comment["url"]})

    def _delete(self, comment_id: int) -> _Answer:
        if _delete_from(self.comments, comment_id):
            return _Answer(204, None)
        return _Answer(404, {"message": "Not Found"})

    def _update(self, comment_id: int, body: Any) -> _Answer:
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str):
            return _Answer(422, {"message": "Invalid request."})
        if len(text) > COMMENT_LIMIT:
            return _too_long()
        for comment in (c for comments in self.comments.values() for c in comments):
            if comment["id"] == comment_id:
                comment["body"] = text
                comment["updated_at"] = "2024-05-02T11:00:00Z"
                return _Answer(200, comment)
        return _Answer(404, {"message": "Not Found"})


def _delete_from(comments: dict[int, list[dict[str, Any]]], comment_id: int) -> bool:
    for thread in comments.values():
        for comment in thread:
            if comment["id"] == comment_id:
                thread.remove(comment)
                return True
    return False


@dataclass(frozen=True)
class _Answer:
    status: int
    data: Any
    headers: dict[str, str] = field(default_factory=dict)


def _too_long() -> _Answer:
    error = {
        "resource": "IssueComment",
        "code": "custom",
        "field": "body",
        "message": "body is too long (maximum is 65536 characters)",
    }
    return _Answer(422, {"message": "Validation Failed", "errors": [error]})


def _handler(fake: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            answer = fake.handle(self.command, self.path, headers, raw)
            payload = b"" if answer.data is None else json.dumps(answer.data).encode()
            self.send_response(answer.status)
            self.send_header("content-type", "application/json; charset=utf-8")
            self.send_header("content-length", str(len(payload)))
            self.send_header("x-github-api-version-selected", "2022-11-28")
            for name, value in answer.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PATCH = do_DELETE = _serve

        def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
            pass

    return Handler


@dataclass
class Blobs:
    """The storage host signed download URLs point to: another origin than the API's."""

    url: str = ""
    content: dict[str, bytes] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)


def _blob_handler(blobs: Blobs) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = {k.lower(): v for k, v in self.headers.items()}
            blobs.requests.append(Recorded("GET", self.path, headers, None))
            path, _, query = self.path.partition("?")
            if "authorization" in headers:
                status, data = 400, b"<Error><Code>InvalidAuthenticationInfo</Code></Error>"
            elif "sig=" not in query or path not in blobs.content:
                status, data = 403, b"<Error><Code>AuthenticationFailed</Code></Error>"
            else:
                status, data = 200, blobs.content[path]
            self.send_response(status)
            self.send_header("content-type", "application/zip" if status == 200 else "text/xml")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


@contextmanager
def _running(server: ThreadingHTTPServer) -> Iterator[None]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


@contextmanager
def serve(prefix: str = "") -> Iterator[FakeGitHub]:
    fake = FakeGitHub(prefix=prefix, blobs=Blobs())
    assert fake.blobs is not None
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(fake))
    blob_server = ThreadingHTTPServer(("127.0.0.1", 0), _blob_handler(fake.blobs))
    fake.url = f"http://127.0.0.1:{server.server_address[1]}{prefix}"
    fake.blobs.url = f"http://127.0.0.1:{blob_server.server_address[1]}"
    with _running(server), _running(blob_server):
        yield fake
