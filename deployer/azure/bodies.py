"""Request bodies sent to Resource Manager as they are rendered."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def raw_json(body: Mapping[str, Any]) -> Any:
    """A request body sent as it is (the SDKs send bytes unchanged): the rendered definition
    is the contract, not the SDK's model of it, which would drop what it does not know.
    Typed Any because the SDKs' signatures say IO, and check for bytes too."""
    return json.dumps(body).encode()
