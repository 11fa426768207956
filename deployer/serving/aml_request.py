"""Stand-in for ``azureml.contrib.services.aml_request`` (``rawhttp``, ``AMLRequest``).

Scripts import it under Azure ML's module names; :mod:`.compat` makes those names
resolve here when the real package isn't installed. ``AMLRequest`` offers the parts of
the Flask request that raw-mode scripts use, built from what the server already has.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from .datastructures import FileStorage, Headers, MultiDict, header_params, parse_multipart

_F = TypeVar("_F", bound=Callable[..., Any])

# Same name and meaning as in azureml-inference-server-http: set when any function is
# decorated, and read by the server after it imports the entry script.
_rawHttpRequested = False


def rawhttp(func: _F) -> _F:
    """Mark ``run()`` as taking the raw request (an :class:`AMLRequest`)."""
    global _rawHttpRequested  # noqa: PLW0603 - the module flag is the API Azure ML defines
    _rawHttpRequested = True
    return func


class JSONError(ValueError):
    """``get_json()`` failed; raised into run(), which makes it a 500 as under Azure ML."""


class AMLRequest:
    """The HTTP request handed to a ``@rawhttp`` ``run()``: a subset of Flask's API."""

    def __init__(
        self,
        method: str,
        path: str,
        query_string: bytes,
        headers: Headers,
        body: bytes,
        *,
        scheme: str = "http",
        remote_addr: str | None = None,
        root_path: str = "",
    ):
        self.method = method
        self.path = path
        self.query_string = query_string
        self.headers = headers
        self.scheme = scheme
        self.remote_addr = remote_addr
        self.root_path = root_path
        self._body = body
        self._form: tuple[MultiDict[str], MultiDict[FileStorage]] | None = None

    def __repr__(self) -> str:
        return f"<AMLRequest {self.url!r} [{self.method}]>"

    # URL parts --------------------------------------------------------------------------
    @property
    def args(self) -> MultiDict[str]:
        return MultiDict(parse_qsl(self.query_string.decode("latin-1"), keep_blank_values=True))

    @property
    def full_path(self) -> str:
        return f"{self.path}?{self.query_string.decode('latin-1')}"

    @property
    def host(self) -> str:
        return str(self.headers.get("Host", ""))

    @property
    def host_url(self) -> str:
        return f"{self.scheme}://{self.host}/"

    @property
    def base_url(self) -> str:
        return f"{self.scheme}://{self.host}{self.root_path}{self.path}"

    @property
    def url(self) -> str:
        query = self.query_string.decode("latin-1")
        return self.base_url + (f"?{query}" if query else "")

    # Body -------------------------------------------------------------------------------
    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return None if value is None else str(value)

    @property
    def mimetype(self) -> str:
        return header_params(self.content_type or "")[0]

    @property
    def mimetype_params(self) -> dict[str, str]:
        return header_params(self.content_type or "")[1]

    @property
    def content_length(self) -> int | None:
        value: int | None = self.headers.get("Content-Length", type=int)
        return value

    @property
    def is_json(self) -> bool:
        mt = self.mimetype
        return mt == "application/json" or (mt.startswith("application/") and mt.endswith("+json"))

    def get_data(
        self, cache: bool = True, as_text: bool = False, parse_form_data: bool = False
    ) -> Any:
        del cache, parse_form_data  # the body is always kept in memory
        return self._body.decode("utf-8", "replace") if as_text else self._body

    @property
    def data(self) -> bytes:
        return self._body

    @property
    def stream(self) -> io.BytesIO:
        return io.BytesIO(self._body)

    def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        del cache
        if not (force or self.is_json):
            if silent:
                return None
            raise JSONError(
                "Did not attempt to load JSON data because the request "
                "Content-Type was not 'application/json'."
            )
        try:
            return json.loads(self._body)
        except ValueError as exc:
            if silent:
                return None
            raise JSONError(f"Failed to decode JSON object: {exc}") from exc

    @property
    def json(self) -> Any:
        return self.get_json()

    def _parse_form(self) -> tuple[MultiDict[str], MultiDict[FileStorage]]:
        if self._form is None:
            mimetype, params = header_params(self.content_type or "")
            if mimetype == "multipart/form-data" and params.get("boundary"):
                self._form = parse_multipart(self._body, params["boundary"])
            elif mimetype == "application/x-www-form-urlencoded":
                pairs = parse_qsl(self._body.decode("utf-8", "replace"), keep_blank_values=True)
                self._form = (MultiDict(pairs), MultiDict())
            else:
                self._form = (MultiDict(), MultiDict())
        return self._form

    @property
    def form(self) -> MultiDict[str]:
        return self._parse_form()[0]

    @property
    def files(self) -> MultiDict[FileStorage]:
        return self._parse_form()[1]

    @property
    def values(self) -> MultiDict[str]:
        return MultiDict([*self.args.items(multi=True), *self.form.items(multi=True)])
