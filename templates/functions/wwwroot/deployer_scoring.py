"""The Azure ML entry script inside the Functions Python worker.

Shipped unchanged into every function app that deployer renders. The entry script is
imported from ``$AZUREML_ENTRY_SCRIPT`` once per worker process and its ``init()`` runs
once, when the function is loaded (the worker's cold start). Each event is then scored
through deployer's invocation core (``deployer.serving.invocation``, shipped in the image
beside this app), the very code the scoring server runs: every script style (a string
body, ``@input_schema``, ``@rawhttp``, an AMLResponse) behaves as it does there, with the
same error contract - a generic 500 message to the client, the traceback in the log.

Events that are not HTTP requests (a blob, a Service Bus message) are scored as a
``POST /score`` of their content, which is what an Azure ML client sends.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit

from deployer.serving.invocation import (
    MSG_RUN_FAILED,
    Invocation,
    RequestIds,
    Unbounded,
    message,
)
from deployer.serving.request import Stream, request_of
from deployer.serving.script import load

JSON_TYPE = "application/json"
log = logging.getLogger("deployer.serving")


class ScoringFailed(Exception):
    """run() failed for an event that has no HTTP answer (blob, queue message): raised so
    that the host retries it. The traceback is in the log already."""

    def __init__(self, text: str, answer: Answer):
        super().__init__(text)
        self.answer = answer


class Answer:
    """run()'s answer as status, header pairs and the whole body."""

    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.body = body

    def header(self, name: str) -> str | None:
        wanted = name.lower()
        return next((value for key, value in self.headers if key.lower() == wanted), None)

    def text(self) -> str:
        return self.body.decode("utf-8")


class EntryScript:
    """The loaded entry script (``init()`` done) and the core that calls its ``run()``."""

    def __init__(self, path: str):
        self.script = load(path)
        self.module = self.script.module
        self.script.init()
        # The Functions host bounds each invocation (host.json's functionTimeout).
        self.invocation = Invocation(self.script, Unbounded())
        self.ids = RequestIds(str(uuid.uuid4())[:24].encode())

    def answer(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes,
    ) -> Answer:
        """Score one request, as the scoring server answers it."""
        parts = urlsplit(url)
        req = request_of(
            method.upper(),
            parts.path or "/",
            parts.query.encode("latin-1"),
            [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()],
            body,
        )
        ids, too_long = self.ids.lines(req)
        if too_long is not None:
            return Answer(431, [("Content-Type", JSON_TYPE)], message(too_long))
        status, lines, payload = self.invocation.answer(req, ids)
        headers = _header_pairs(lines)
        try:
            return Answer(status, headers, _whole(payload))
        except Exception:
            log.exception("the streamed response raised")
            failed = [("Content-Type", JSON_TYPE), ("x-ms-run-function-failed", "True")]
            return Answer(500, failed, message(MSG_RUN_FAILED))

    def score_event(self, what: str, body: bytes, content_type: str | None = None) -> Answer:
        """An event's content as ``POST /score``; anything but 200 raises ScoringFailed."""
        answer = self.answer("POST", "/score", {"Content-Type": content_type or JSON_TYPE}, body)
        if answer.status != 200:
            raise ScoringFailed(f"scoring {what} answered {answer.status}: {answer.text()}", answer)
        return answer


def load_entry_script() -> EntryScript:
    """Import the entry script named by AZUREML_ENTRY_SCRIPT and call its ``init()``."""
    setting = os.environ.get("AZUREML_ENTRY_SCRIPT")
    if not setting:
        raise RuntimeError("AZUREML_ENTRY_SCRIPT is not set: the image sets it to the entry script")
    return EntryScript(setting)


def _header_pairs(lines: Iterable[bytes]) -> list[tuple[str, str]]:
    pairs = []
    for line in lines:
        for part in line.decode("latin-1").split("\r\n"):  # a line may hold two headers
            if part:
                name, _, value = part.partition(":")
                pairs.append((name.strip(), value.strip()))
    return pairs


def _whole(payload: bytes | Stream) -> bytes:
    """The body; a streamed one is read to its end (a func.HttpResponse holds a whole
    body: streaming needs the separate azurefunctions-extensions-http-fastapi package)."""
    if isinstance(payload, bytes):
        return payload
    try:
        return (payload.first or b"") + b"".join(payload.chunks)
    finally:
        payload.close()
