"""Stand-in for ``azureml.contrib.services.aml_request`` (``rawhttp``, ``AMLRequest``).

Scripts import it under Azure ML's module names; :mod:`.compat` makes those names
resolve here when the real package isn't installed. In Azure ML, a ``@rawhttp`` run()
gets Flask's request object, a werkzeug ``Request``; ``AMLRequest`` is one too (with
Flask's few additions), built by :func:`build_request` from a WSGI environ such as
gunicorn, which azureml-inference-server-http runs under, would build.

werkzeug is imported here, at module level: this module is imported only when a
script (or the server, for a ``@rawhttp`` script) needs it, never on the plain path.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import unquote_to_bytes

from werkzeug.exceptions import BadRequest
from werkzeug.wrappers import Request

__all__ = ["AMLRequest", "build_request", "rawhttp"]

_F = TypeVar("_F", bound=Callable[..., Any])

# Same name and meaning as in azureml-inference-server-http: set when any function is
# decorated, and read by the server after it imports the entry script.
_rawHttpRequested = False


def rawhttp(func: _F) -> _F:
    """Mark ``run()`` as taking the raw request (an :class:`AMLRequest`)."""
    global _rawHttpRequested  # noqa: PLW0603 - the module flag is the API Azure ML defines
    _rawHttpRequested = True
    return func


class AMLRequest(Request):
    """The request handed to a ``@rawhttp`` run(): werkzeug's ``Request``, with what
    Flask 3.1 (azureml-inference-server-http 1.5.1's) changes in it."""

    # Flask's defaults for its MAX_CONTENT_LENGTH, MAX_FORM_MEMORY_SIZE and
    # MAX_FORM_PARTS config (werkzeug's differ in some versions). A form field over
    # 500 kB or more than 1000 parts: werkzeug raises 413, and run() fails (a 500).
    max_content_length: int | None = None
    max_form_memory_size: int | None = 500_000
    max_form_parts = 1_000
    # Flask's routing attributes: a script reading them gets what Flask would hold
    # before routing (the route is /score in any case).
    url_rule: Any = None
    view_args: dict[str, Any] | None = None
    routing_exception: Exception | None = None

    def on_json_loading_failed(self, e: ValueError | None) -> Any:
        """As Flask: a body that isn't JSON is a bare ``BadRequest`` (werkzeug's
        message is kept only in debug mode, which Azure ML doesn't use); a request
        that isn't ``application/json`` stays werkzeug's ``UnsupportedMediaType``."""
        try:
            return super().on_json_loading_failed(e)
        except BadRequest as exc:
            raise BadRequest() from exc


def build_request(
    method: str,
    path: str,
    query: bytes,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    *,
    remote_addr: str | None,
    scheme: str = "http",
    server: tuple[str, int] | None = None,
    root_path: str = "",
    remote_port: int | None = None,
    protocol: str = "HTTP/1.1",
) -> AMLRequest:
    """An AMLRequest from raw parts: a WSGI environ as gunicorn would build it.

    ``path`` is the path as the request line sent it (still percent-encoded: it is
    decoded here, to bytes read as latin-1, as WSGI wants); ``query`` the raw query
    string; ``headers`` the header lines as received; ``server`` the listening
    address (gunicorn's SERVER_NAME/SERVER_PORT); ``root_path`` the WSGI SCRIPT_NAME.

    As gunicorn: repeated headers are joined with ``,`` into one ``HTTP_*`` value;
    Content-Type and Content-Length become ``CONTENT_TYPE``/``CONTENT_LENGTH`` (only
    if sent: a chunked body has no length, and ``wsgi.input_terminated`` says the
    whole body is there); a header whose name holds ``_`` is dropped (gunicorn's
    ``header_map = "drop"``: ``X_Forwarded_For`` would pose as ``X-Forwarded-For``).
    The body is ``wsgi.input``, read as a stream by werkzeug.
    """
    environ: dict[str, Any] = {
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,  # run() calls are serial, one scoring thread
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "wsgi.input_terminated": True,
        "SERVER_SOFTWARE": "deployer",
        "SERVER_PROTOCOL": protocol,
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": root_path,
        "PATH_INFO": unquote_to_bytes(path).decode("latin-1"),
        "QUERY_STRING": query.decode("latin-1"),
        "RAW_URI": path + ("?" + query.decode("latin-1") if query else ""),
    }
    if remote_addr is not None:
        environ["REMOTE_ADDR"] = remote_addr
        if remote_port is not None:
            environ["REMOTE_PORT"] = str(remote_port)
    repeated: dict[str, list[str]] = {}
    host = None
    for raw_name, raw_value in headers:
        name = raw_name.decode("latin-1").upper()
        if "_" in name:
            continue
        value = raw_value.decode("latin-1").strip(" \t")
        if name == "CONTENT-TYPE":
            environ["CONTENT_TYPE"] = value
            continue
        if name == "CONTENT-LENGTH":
            environ["CONTENT_LENGTH"] = value
            continue
        if name == "HOST":
            host = value
        key = "HTTP_" + name.replace("-", "_")
        if key in environ:
            repeated.setdefault(key, [environ[key]]).append(value)
        else:
            environ[key] = value
    for key, values in repeated.items():
        environ[key] = ",".join(values)
    if server is not None:
        environ["SERVER_NAME"], environ["SERVER_PORT"] = server[0], str(server[1])
    else:  # no listening socket (Azure Functions): the Host header's, as WSGI allows
        name, _, port = (host or "localhost").rpartition(":")
        if not name or not port.isdigit():
            name, port = host or "localhost", "443" if scheme == "https" else "80"
        environ["SERVER_NAME"], environ["SERVER_PORT"] = name, port
    return AMLRequest(environ)
