"""Stand-in for ``azureml.contrib.services.aml_response`` (``AMLResponse``).

In Azure ML, ``AMLResponse`` is a Flask ``Response`` (a werkzeug ``Response``) with its
own constructor; so is ours, with the same constructor behaviour as
azureml-inference-server-http 1.5.1. :func:`response_parts` turns it - or a Flask or
werkzeug ``Response`` from a real install - into what the server sends, as werkzeug
and gunicorn would have sent it.

werkzeug is imported here, at module level: this module is imported only when a
script needs it, never on the plain path.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from werkzeug.wrappers import Response

__all__ = ["AMLResponse", "response_parts"]


class AMLResponse(Response):
    """An HTTP response returned by ``run()``: Flask's ``Response``, and Azure ML's
    constructor.

    ``AMLResponse(message, status_code, response_headers, json_str, run_function_failed)``
    - ``message``: str, bytes, or an iterable of them (a generator is streamed); with
      ``json_str=True``, any object, sent as ``json.dumps(message)`` and
      ``application/json``; ``None``: ``{}`` as ``application/json``.
    - the default content type is Flask's ``text/html; charset=utf-8``; a
      ``"Content-Type"`` key (so spelt) in ``response_headers`` replaces it (unless
      ``json_str`` or ``None`` - then both are sent, as in Azure ML).
    - ``response_headers`` values are split on ``,`` into repeated headers (a value
      must be a str, as in Azure ML).
    - ``x-ms-run-function-failed`` is ``str(run_function_failed)``.
    """

    default_mimetype = "text/html"  # Flask's (werkzeug's is text/plain)
    autocorrect_location_header = False  # Flask's

    def __init__(
        self,
        message: Any,
        status_code: int | str,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ):
        headers: Mapping[str, str] = {} if response_headers is None else response_headers
        if message is None:  # Azure ML answers an empty JSON object
            super().__init__(json.dumps({}), status=status_code, mimetype="application/json")
        elif json_str:
            super().__init__(json.dumps(message), status=status_code, mimetype="application/json")
        else:
            super().__init__(message, status=status_code)
            if "Content-Type" in headers:  # case-sensitive, as in Azure ML
                self.headers.remove("Content-Type")
        self.headers["x-ms-run-function-failed"] = str(run_function_failed)
        # As in Azure ML: a comma separates repeated values of one header.
        for name, value in headers.items():
            for item in value.split(","):
                self.headers.add_header(name, item.strip())


# What gunicorn drops from an app's headers (hop-by-hop, and the two it sets itself),
# and Content-Length, which the server sets from what it sends.
_DROPPED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "server",
        "date",
        "content-length",
    }
)
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field-name
_VALUE = re.compile(r"[ \t\x21-\x7e\x80-\xff]*")  # field-vchar, as gunicorn checks
_FAILED = "x-ms-run-function-failed"
# The request as get_wsgi_headers/get_app_iter see it: only a Location header made
# absolute (autocorrect_location_header, off in Flask) reads the host from it. HEAD
# is the server's to handle (send the headers, Content-Length included, no body).
_ENVIRON = {
    "REQUEST_METHOD": "POST",
    "wsgi.url_scheme": "http",
    "SERVER_NAME": "localhost",
    "SERVER_PORT": "80",
    "SCRIPT_NAME": "",
    "PATH_INFO": "/score",
    "QUERY_STRING": "",
}


def response_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes | Iterator[bytes]]:
    """Status, headers and body of a response run() returned, as Azure ML sends them.

    ``result`` is ours, a Flask/werkzeug ``Response`` (a script may run with the real
    azureml package installed), or anything with ``status_code``, ``headers`` (pairs)
    and ``get_data()``. The headers are werkzeug's ``get_wsgi_headers`` (Location made
    a URI, entity headers dropped from a 304...) less the framing headers
    Content-Length/Transfer-Encoding/Connection and the others gunicorn drops: the
    server sets them. With a 5xx status, ``x-ms-run-function-failed: True``, as Azure
    ML's /score route sets it.

    The body is bytes, or - when werkzeug would stream it (``is_streamed``: a generator
    or other iterator) - an iterator of the chunks as they are produced, which calls
    the response's ``close()`` when exhausted, closed, or failed (an exception from the
    generator comes out of ``next()``). A Content-Length the script set is honoured as
    gunicorn does: no more than that many bytes are sent. Raises ValueError for a
    header that can't be sent, TypeError for a body chunk that isn't bytes (a str chunk
    in a ``direct_passthrough`` response).
    """
    if not isinstance(result, Response):
        return _duck_parts(result)
    environ = dict(_ENVIRON)
    status = result.status_code
    wsgi_headers = result.get_wsgi_headers(environ).to_wsgi_list()
    app_iter = result.get_app_iter(environ)
    limit = None
    headers: list[tuple[str, str]] = []
    try:
        for name, value in wsgi_headers:
            if name.lower() == "content-length":
                limit = int(value)
            headers.append((name, value))
        headers = _checked(status, headers)
    except Exception:
        _close(app_iter)
        raise
    if result.is_streamed and not (100 <= status < 200 or status in (204, 304)):
        return status, headers, _Chunks(app_iter, limit)
    try:
        body = b"".join(app_iter)
    finally:
        _close(app_iter)
    return status, headers, body if limit is None else body[:limit]


def _duck_parts(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    status = int(result.status_code)
    headers = [(str(name), str(value)) for name, value in result.headers]
    return status, _checked(status, headers), bytes(result.get_data())


def _checked(status: int, headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers the server may send: validated, framing dropped, 5xx marked failed."""
    out: list[tuple[str, str]] = []
    failed_at = None
    for name, value in headers:
        if not _TOKEN.fullmatch(name):
            raise ValueError(f"invalid response header name {name!r}")
        if not _VALUE.fullmatch(value):
            raise ValueError(f"invalid value for response header {name!r}")
        low = name.lower()
        if low in _DROPPED:
            continue
        text = value.strip(" \t")
        if low == _FAILED and status >= 500:  # Azure ML sets the first, drops the others
            if failed_at is not None:
                continue
            failed_at = len(out)
            text = "True"
        out.append((name, text))
    if status >= 500 and failed_at is None:
        out.append((_FAILED, "True"))
    return out


def _close(iterable: Iterable[bytes]) -> None:
    close = getattr(iterable, "close", None)
    if close is not None:
        close()


class _Chunks(Iterator[bytes]):
    """A streamed body, chunk by chunk; closes the app iterator (so the response) once."""

    def __init__(self, app_iter: Iterable[bytes], limit: int | None):
        self._app_iter = app_iter
        self._iter = iter(app_iter)
        self._left = limit
        self._closed = False

    def __next__(self) -> bytes:
        if self._closed:
            raise StopIteration
        try:
            while True:
                chunk = next(self._iter)
                if not isinstance(chunk, bytes):
                    raise TypeError(f"response body chunk is not bytes: {chunk!r}")
                if self._left is not None:
                    if self._left <= 0:
                        raise StopIteration
                    chunk = chunk[: self._left]
                    self._left -= len(chunk)
                if chunk:  # an empty chunk would end a chunked body
                    return chunk
        except BaseException:  # StopIteration included: done, or failed
            self.close()
            raise

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            _close(self._app_iter)
