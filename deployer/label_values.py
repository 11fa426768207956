"""Kubernetes label values, and object names, from names that may not fit them.

A label value is at most 63 characters of letters, digits, '-', '_' and '.', starting and
ending with a letter or digit. Azure ML model names allow 255 characters and may end with
'-', '_' or '.', so a name that is not already a valid value is shortened and given a hash
of the whole name: distinct names stay distinct, and the same name always gives the same
value. Annotations and image labels, which take any text, keep the true name.
"""

from __future__ import annotations

import hashlib
import re

MAX_LENGTH = 63
HASH_LENGTH = 8
_VALID = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9_.-]*[A-Za-z0-9])?)?$")


def label_value(name: str) -> str:
    """``name`` itself when it is a valid label value, else ``<prefix>-<hash>``: the name cut
    to fit, trailing '-', '_' and '.' removed, and 8 hex digits of its sha256."""
    if len(name) <= MAX_LENGTH and _VALID.match(name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:HASH_LENGTH]
    prefix = name[: MAX_LENGTH - HASH_LENGTH - 1].rstrip("-_.")
    return f"{prefix}-{digest}" if prefix else digest


def object_name(*parts: str, room: int = 0) -> str:
    """A DNS-1123 label naming an object after ``parts`` (``service-target``), cut to fit 63
    characters less ``room`` (for a suffix the caller adds) with a hash of the whole name,
    so two targets of one service never share an object."""
    name = "-".join(parts)
    limit = MAX_LENGTH - room
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:6]
    return f"{name[: limit - 7].rstrip('-')}-{digest}"
