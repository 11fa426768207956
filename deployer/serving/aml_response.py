"""Stand-in for ``azureml.contrib.services.aml_response`` (``AMLResponse``).

Same constructor and resulting status, headers and body as Azure ML's Flask-based
class. The server reads only ``status_code``, ``headers`` (iterated as pairs) and
``get_data()`` - attributes a Flask/werkzeug ``Response`` has too, which is how an
``AMLResponse`` from a real azureml-inference-server-http install also works.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from .datastructures import Headers

_DEFAULT_MIMETYPE = "text/html; charset=utf-8"  # Flask's default, which Azure ML keeps


def _to_bytes(message: Any) -> bytes:
    if isinstance(message, str):
        return message.encode("utf-8")
    if isinstance(message, bytes | bytearray | memoryview):
        return bytes(message)
    if isinstance(message, Iterable):  # Flask accepts an iterable of str/bytes chunks
        return b"".join(_to_bytes(chunk) for chunk in message)
    raise TypeError(f"AMLResponse body must be str, bytes or an iterable of them, not {message!r}")


class AMLResponse:
    """An HTTP response returned by ``run()`` and sent as-is."""

    def __init__(
        self,
        message: Any,
        status_code: int,
        response_headers: Mapping[str, str] | None = None,
        json_str: bool = False,
        run_function_failed: bool = False,
    ):
        response_headers = response_headers or {}
        self.status_code = int(status_code)
        self.headers = Headers()
        if message is None:  # Azure ML answers an empty JSON object
            self._body = b"{}"
            self.headers["Content-Type"] = "application/json"
        elif json_str:
            self._body = json.dumps(message).encode("utf-8")
            self.headers["Content-Type"] = "application/json"
        else:
            self._body = _to_bytes(message)
            if not any(name.lower() == "content-type" for name in response_headers):
                self.headers["Content-Type"] = _DEFAULT_MIMETYPE
        self.headers["x-ms-run-function-failed"] = str(bool(run_function_failed))
        # As in Azure ML: a comma separates repeated values of one header.
        for name, value in response_headers.items():
            for item in str(value).split(","):
                self.headers.add(name, item.strip())

    def __repr__(self) -> str:
        return f"<AMLResponse {len(self._body)} bytes [{self.status_code}]>"

    def get_data(self, as_text: bool = False) -> Any:
        return self._body.decode("utf-8", "replace") if as_text else self._body

    def set_data(self, value: str | bytes) -> None:
        self._body = _to_bytes(value)

    @property
    def data(self) -> bytes:
        return self._body

    @data.setter
    def data(self, value: str | bytes) -> None:
        self.set_data(value)

    @property
    def status(self) -> str:
        return str(self.status_code)

    @property
    def content_type(self) -> str | None:
        value = self.headers.get("Content-Type")
        return None if value is None else str(value)

    @property
    def mimetype(self) -> str | None:
        value = self.content_type
        return None if value is None else value.split(";", 1)[0].strip().lower()
