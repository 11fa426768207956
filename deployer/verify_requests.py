"""What one test of deploy.yaml sends: method, query, headers and one body.

The body is JSON, text, a file sent as it is, or a multipart/form-data upload (RFC 7578)
of files and form fields. Files are read from the folder of deploy.yaml, and may not
lead out of it (the bytes go to an endpoint whose code a pull request controls).
"""

from __future__ import annotations

import functools
import json
import mimetypes
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

from deployer.config.model import ScoringTest
from deployer.errors import DeployerError

# Methods whose request has no body unless the test gives one.
_BODILESS = ("GET", "HEAD", "DELETE", "OPTIONS")


@dataclass(frozen=True)
class PreparedRequest:
    """What is sent for one test: built once, sent by the test and again by the burst."""

    method: str
    query: str  # percent-encoded, without "?"; "" for none
    body: bytes | None
    headers: dict[str, str]


class RequestFileError(DeployerError):
    """A file a test sends cannot be read: that test fails, without being sent."""


def merge_headers(*layers: Mapping[str, str]) -> dict[str, str]:
    """Later layers win; header names ignore case (the later spelling is kept)."""
    merged: dict[str, tuple[str, str]] = {}
    for layer in layers:
        for name, value in layer.items():
            merged[name.lower()] = (name, value)
    return dict(merged.values())


def prepare_request(test: ScoringTest, base_dir: Path | None = None) -> PreparedRequest:
    """The method, query, body and headers one test sends. Raises ``RequestFileError``
    when a file it sends cannot be read."""
    query = urlencode(
        [
            (name, value)
            for name, values in test.query.items()
            for value in (values if isinstance(values, list) else [values])
        ]
    )
    body, content_type = _body(test, base_dir)
    defaults = {"Content-Type": content_type} if content_type else {}
    return PreparedRequest(test.method, query, body, merge_headers(defaults, test.headers))


def _body(test: ScoringTest, base_dir: Path | None) -> tuple[bytes | None, str | None]:
    """The body and the Content-Type it gets unless the test's headers name one."""
    if test.body is not None:
        return test.body.encode(), "text/plain"
    if test.body_file is not None:
        return _read(test, "body_file", test.body_file, base_dir), guess_type(test.body_file)
    if test.files or test.form:
        return _multipart(test, base_dir)
    if "json_" in test.model_fields_set or test.method not in _BODILESS:
        # No body given to a POST, PUT or PATCH: JSON null, as before these forms existed.
        return json.dumps(test.json_).encode(), "application/json"
    return None, None


def guess_type(path: str) -> str:
    """The media type of a file, from its extension; application/octet-stream if unknown
    or compressed (data.json.gz is not JSON on the wire)."""
    media_type, encoding = _mime_types().guess_type(path, strict=False)
    if media_type is None or encoding is not None:
        return "application/octet-stream"
    return media_type


@functools.cache
def _mime_types() -> mimetypes.MimeTypes:
    """Python's own table only, not the machine's /etc/mime.types: the same guess on every
    machine (made on first use: reading the system's files costs an import)."""
    return mimetypes.MimeTypes()


def _read(test: ScoringTest, key: str, name: str, base_dir: Path | None) -> bytes:
    base = base_dir
    if base is None:
        raise RequestFileError(f"{key} {name!r}: the folder of deploy.yaml is not known")
    folder = base.resolve()
    path = (folder / name.replace("\\", "/")).resolve()
    if not path.is_relative_to(folder):
        raise RequestFileError(f"{key} {name!r} leads outside the folder of deploy.yaml")
    try:
        return path.read_bytes()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise RequestFileError(f"{key} {name!r} cannot be read: {reason}") from None


def _multipart(test: ScoringTest, base_dir: Path | None) -> tuple[bytes, str]:
    """multipart/form-data (RFC 7578): the form's text fields, then one part per file."""
    parts: list[tuple[bytes, bytes]] = []
    for name, value in test.form.items():
        parts.append(
            (f'Content-Disposition: form-data; name="{name}"\r\n'.encode(), value.encode())
        )
    for name, file in test.files.items():
        content = _read(test, f"files.{name}", file, base_dir)
        filename = _quoted(Path(file.replace("\\", "/")).name)
        head = (
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {guess_type(file)}\r\n"
        )
        parts.append((head.encode(), content))
    boundary = uuid.uuid4().hex
    while any(boundary.encode() in content for _, content in parts):
        boundary = uuid.uuid4().hex
    body = b"".join(
        b"--" + boundary.encode() + b"\r\n" + head + b"\r\n" + content + b"\r\n"
        for head, content in parts
    )
    body += b"--" + boundary.encode() + b"--\r\n"
    return body, f"multipart/form-data; boundary={boundary}"


def _quoted(filename: str) -> str:
    """A file name inside a quoted header parameter, escaped as browsers do (WHATWG)."""
    return filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
