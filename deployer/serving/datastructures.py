"""The small werkzeug look-alikes that raw-request scripts touch: headers, args, files.

Azure ML hands ``@rawhttp`` scripts a Flask request. We don't ship Flask, so these
classes offer the parts of werkzeug's API such scripts use (``headers.get``,
``args.getlist``, ``files["image"].read()``...). They are built only for raw-mode
requests, never on the plain scoring path.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from email.message import Message
from email.utils import collapse_rfc2231_value
from typing import IO, Any, TypeVar, overload

_T = TypeVar("_T")
_V = TypeVar("_V")


class Headers:
    """Ordered, case-insensitive, multi-valued headers (the werkzeug ``Headers`` API).

    Like werkzeug's, iterating yields ``(name, value)`` pairs, so ``dict(headers)``
    works and a server can treat ours and Flask's alike.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] | Mapping[str, str] | None = None):
        self._items: list[tuple[str, str]] = []
        if isinstance(items, Mapping):
            items = items.items()
        for name, value in items or ():
            self.add(name, value)

    def get(self, key: str, default: Any = None, type: Callable[[str], Any] | None = None) -> Any:
        low = key.lower()
        for name, value in self._items:
            if name.lower() == low:
                if type is None:
                    return value
                try:
                    return type(value)
                except ValueError:
                    return default
        return default

    def getlist(self, key: str) -> list[str]:
        low = key.lower()
        return [value for name, value in self._items if name.lower() == low]

    get_all = getlist

    def __getitem__(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise KeyError(key)
        return str(value)

    def __setitem__(self, key: str, value: object) -> None:
        self.set(key, value)

    def __delitem__(self, key: str) -> None:
        self.remove(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self.get(key) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._items!r})"

    def add(self, key: str, value: object) -> None:
        self._items.append((key, str(value)))

    add_header = add

    def set(self, key: str, value: object) -> None:
        self.remove(key)
        self.add(key, value)

    def setdefault(self, key: str, default: object) -> str:
        if key not in self:
            self.add(key, default)
        return self[key]

    def remove(self, key: str) -> None:
        low = key.lower()
        self._items = [item for item in self._items if item[0].lower() != low]

    def pop(self, key: str, default: Any = None) -> Any:
        value = self.get(key, default)
        self.remove(key)
        return value

    def keys(self) -> list[str]:
        return [name for name, _ in self._items]

    def values(self) -> list[str]:
        return [value for _, value in self._items]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def to_wsgi_list(self) -> list[tuple[str, str]]:
        return list(self._items)


class MultiDict(Mapping[str, _V]):
    """Read-only multi-valued mapping: ``d[k]`` is the first value, ``getlist`` all."""

    def __init__(self, pairs: Iterable[tuple[str, _V]] = ()):
        self._lists: dict[str, list[_V]] = {}
        for key, value in pairs:
            self._lists.setdefault(key, []).append(value)

    def __getitem__(self, key: str) -> _V:
        return self._lists[key][0]

    def __iter__(self) -> Iterator[str]:
        return iter(self._lists)

    def __len__(self) -> int:
        return len(self._lists)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({list(self.items(multi=True))!r})"

    @overload
    def get(self, key: str) -> _V | None: ...
    @overload
    def get(self, key: str, default: _V | _T) -> _V | _T: ...
    @overload
    def get(self, key: str, default: Any = None, type: Callable[[_V], _T] = ...) -> Any: ...
    def get(self, key: str, default: Any = None, type: Callable[[_V], Any] | None = None) -> Any:
        values = self._lists.get(key)
        if not values:
            return default
        if type is None:
            return values[0]
        try:
            return type(values[0])
        except ValueError:
            return default

    def getlist(self, key: str) -> list[_V]:
        return list(self._lists.get(key, ()))

    def items(self, multi: bool = False) -> Any:  # werkzeug's signature
        if multi:
            return [(key, value) for key, values in self._lists.items() for value in values]
        return [(key, values[0]) for key, values in self._lists.items()]

    def to_dict(self, flat: bool = True) -> dict[str, Any]:
        if flat:
            return {key: values[0] for key, values in self._lists.items()}
        return {key: list(values) for key, values in self._lists.items()}


class FileStorage(io.BytesIO):
    """An uploaded file: a ``BytesIO`` (so ``PIL.Image.open(f)`` works) with werkzeug's names."""

    def __init__(
        self, data: bytes, filename: str | None, name: str, content_type: str, headers: Headers
    ):
        super().__init__(data)
        self.filename = filename
        self.name = name
        self.content_type = content_type
        self.mimetype = content_type.split(";", 1)[0].strip().lower()
        self.headers = headers

    @property
    def stream(self) -> FileStorage:
        return self

    def save(self, dst: str | os.PathLike[str] | IO[bytes], buffer_size: int = 16384) -> None:
        del buffer_size  # werkzeug's parameter; one write is enough for an in-memory body
        if isinstance(dst, str | os.PathLike):
            with open(dst, "wb") as out:
                out.write(self.getvalue())
        else:
            dst.write(self.getvalue())

    def __repr__(self) -> str:
        return f"<FileStorage: {self.filename!r} ({self.content_type!r})>"


def header_params(value: str) -> tuple[str, dict[str, str]]:
    """Split ``text/plain; charset=utf-8`` into the lower-cased value and its parameters."""
    message = Message()
    message["x"] = value
    params = message.get_params(header="x") or []
    main = params[0][0].lower() if params else ""
    return main, {key.lower(): collapse_rfc2231_value(value) for key, value in params[1:]}


def parse_multipart(
    body: bytes, boundary: str, charset: str = "utf-8"
) -> tuple[MultiDict[str], MultiDict[FileStorage]]:
    """Parse a ``multipart/form-data`` body into (form fields, files).

    The body is already in memory (bounded by ``max_request_bytes``), so a split on
    the delimiter is simpler and exact for binary parts.
    """
    form: list[tuple[str, str]] = []
    files: list[tuple[str, FileStorage]] = []
    delimiter = b"--" + boundary.encode("latin-1")
    for chunk in body.split(delimiter)[1:]:
        if chunk.startswith(b"--"):  # the closing delimiter
            break
        head, sep, content = chunk.removeprefix(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        content = content.removesuffix(b"\r\n")
        headers = Headers()
        for line in head.decode("latin-1").split("\r\n"):
            key, colon, value = line.partition(":")
            if colon:
                headers.add(key.strip(), value.strip())
        disposition, params = header_params(headers.get("Content-Disposition", ""))
        name = params.get("name")
        if disposition != "form-data" or name is None:
            continue
        if "filename" in params:
            ctype = str(headers.get("Content-Type", "application/octet-stream"))
            files.append((name, FileStorage(content, params["filename"], name, ctype, headers)))
        else:
            form.append((name, content.decode(charset, "replace")))
    return MultiDict(form), MultiDict(files)
