"""How IoT Hub authenticates a service request: a shared access signature made with one of
the hub's shared access policies, or (``auth: entra``) a bearer token.

A SAS is ``SharedAccessSignature sr=<resource>&sig=<signature>&se=<expiry>&skn=<policy>``:
``sr`` is the hub's host name URL-encoded (azure-iot-hub quotes it with ``quote_plus``, so
``localhost:PORT`` arrives as ``localhost%3APORT``), ``se`` seconds since the epoch, ``sig``
the URL-encoded base64 HMAC-SHA256 of ``sr`` (as sent) + ``"\\n"`` + ``se`` with the policy's
base64-decoded key. The hub accepts the policy's primary or secondary key, a resource that
is its host name (case-insensitively) or a path under it, and a token not expired.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from urllib.parse import unquote, unquote_plus

from tests.doubles.iothub import errors


@dataclass
class Policy:
    name: str
    primary_key: str  # base64
    secondary_key: str  # base64


@dataclass(frozen=True)
class Caller:
    scheme: str  # "sas" or "bearer"
    name: str  # the policy's name, or "bearer"


def sign(resource: str, expiry: int, key: str) -> str:
    """The signature (base64, not URL-encoded) of an encoded resource and an expiry."""
    message = f"{resource}\n{expiry}".encode()
    return base64.b64encode(
        hmac.new(base64.b64decode(key), message, hashlib.sha256).digest()
    ).decode()


def authenticate(
    authorization: str,
    host: str,
    policies: dict[str, Policy],
    bearer_tokens: set[str],
    now: float,
) -> Caller:
    """The caller, or raises HubError 401 (the reason in its ``detail``)."""
    if not authorization:
        raise errors.unauthorized("no Authorization header")
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        if value.strip() in bearer_tokens:
            return Caller("bearer", "bearer")
        raise errors.unauthorized("the bearer token is not one the hub accepts")
    if scheme != "SharedAccessSignature":
        raise errors.unauthorized(f"unknown authorization scheme {scheme!r}")
    fields: dict[str, str] = {}
    for part in value.strip().split("&"):
        name, sep, field = part.partition("=")
        if not sep or name in fields:
            raise errors.unauthorized(f"malformed shared access signature field {part!r}")
        fields[name] = field
    missing = [name for name in ("sr", "sig", "se", "skn") if name not in fields]
    if missing:
        raise errors.unauthorized(f"the shared access signature lacks {', '.join(missing)}")
    resource = unquote_plus(fields["sr"]).lower()
    if resource != host.lower() and not resource.startswith(host.lower() + "/"):
        raise errors.unauthorized(f"the token's resource {resource!r} is not this hub ({host})")
    try:
        expiry = int(fields["se"])
    except ValueError:
        raise errors.unauthorized(f"the expiry {fields['se']!r} is not a number") from None
    if expiry < now:
        raise errors.unauthorized(f"the token expired at {expiry} (now {int(now)})")
    policy = policies.get(fields["skn"])
    if policy is None:
        raise errors.unauthorized(f"no shared access policy named {fields['skn']!r}")
    given = unquote(fields["sig"])
    for key in (policy.primary_key, policy.secondary_key):
        if hmac.compare_digest(sign(fields["sr"], expiry, key), given):
            return Caller("sas", policy.name)
    raise errors.unauthorized(
        "The specified SAS token has an invalid signature. It does not match either the "
        "primary or secondary key."
    )
