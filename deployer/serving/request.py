"""A request as the server parsed it, and the answer it gets.

Kept apart from protocol.py so that code calling run() without our HTTP server (the
Azure Functions handler, through invocation.py) shares the request's shape without
importing the parser.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

log = logging.getLogger("deployer.serving")


class Request:
    """One request, from its first byte until it is answered. The headers the server
    acts on are pulled out while parsing.

    Class attributes are the defaults, so creating one per request sets only what the
    request has (no __init__ assigning twenty fields).
    """

    method = "GET"
    path = "/"
    query = b""
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    body = b""
    ctype: bytes | None = None
    request_id: bytes | None = None
    legacy_id: bytes | None = None
    client_id: bytes | None = None
    trace: bytes | None = None
    authorization: bytes | None = None  # a secret: never logged (app.py checks it)
    keep_alive = True
    http10 = False  # an HTTP/1.0 client: no chunked answers
    peer: str | None = None
    t0 = 0.0
    # Where it stands:
    complete = False  # all of it received
    expect = False  # an HTTP/1.1 client waits for 100 Continue before the body
    continued = False  # ... and got it
    dispatched = False  # its answer comes from the app later (HttpProtocol.answer)
    early: Response | None = None  # answered before the body was read (413), then linger
    error: tuple[int, bytes] | None = None  # the input broke here: answer this and close


# The headers a Request holds apart (HttpProtocol.on_header pulls them out inline, for speed).
PULLED_HEADERS = {
    b"content-type": "ctype",
    b"x-request-id": "request_id",
    b"x-ms-request-id": "legacy_id",
    b"x-ms-client-request-id": "client_id",
    b"traceid": "trace",
    b"authorization": "authorization",
}


def request_of(
    method: str, path: str, query: bytes, headers: list[tuple[bytes, bytes]], body: bytes
) -> Request:
    """A complete Request from its parts, for callers of run() other than the HTTP server
    (the Functions handler). Header names must be lower-case."""
    req = Request()
    req.method, req.path, req.query, req.headers, req.body = method, path, query, headers, body
    req.complete = True
    for name, value in headers:
        pulled = PULLED_HEADERS.get(name)
        if pulled is not None:
            setattr(req, pulled, value)
    return req


class Stream:
    """A body sent as run()'s response produces it: an AMLResponse over a generator.

    ``chunks`` is the script's code, so it runs on the scoring thread. As gunicorn under
    Azure ML does, the first chunk is produced before the head is sent (``start``): a
    generator that fails at once is a 500, not a 200 cut short. The connection clears
    ``writable`` while the client is not reading (the next chunk waits: back-pressure
    reaches the generator) and sets ``gone`` when the client has left.
    """

    __slots__ = ("chunks", "first", "gone", "writable")

    def __init__(self, chunks: Iterator[bytes]):
        self.chunks = chunks
        self.first: bytes | None = None  # None: the body is empty (or a HEAD's)
        self.writable = threading.Event()
        self.writable.set()
        self.gone = False

    def start(self, head: bool) -> bool:
        """Produce the first chunk (not for HEAD: its body is never sent). False, with the
        traceback logged and the stream closed, if the generator raised."""
        if head:
            self.close()
            return True
        try:
            self.first = next(self.chunks, None)
        except Exception:
            log.error("run()'s streamed response raised before its first chunk", exc_info=True)
            self.close()
            return False
        return True

    def close(self) -> None:
        close = getattr(self.chunks, "close", None)
        if close is not None:
            close()


# (status, header lines b"name: value\r\n", body)
Response = tuple[int, list[bytes], bytes | Stream]
