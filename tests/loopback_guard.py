"""The test suite's network guard: any connection to an address outside loopback fails.

Tests reach every service through doubles on 127.0.0.1; a connection anywhere else means a
test (or deployer under test) would talk to the real world: to Azure's instance metadata
endpoint (169.254.169.254), to login.microsoftonline.com, to a registry. The guard makes
that an error at once, instead of a slow timeout or, worse, a real request.

Installed for the test process by tests/conftest.py, and for the Python subprocesses the
tests start (the deployer CLI) through ``tests/sitecustomize/`` on their PYTHONPATH.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_ALLOWED_FAMILIES = {getattr(socket, "AF_UNIX", -1)}
_original_connect = socket.socket.connect
_original_connect_ex = socket.socket.connect_ex


class NonLoopbackConnection(OSError):
    """A test tried to connect outside 127.0.0.0/8 (or ::1)."""


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family in _ALLOWED_FAMILIES:
        return
    host = str(address[0] if isinstance(address, tuple) else address)
    try:
        addresses = [ipaddress.ip_address(host.split("%", 1)[0])]
    except ValueError:  # a name: what it resolves to must all be loopback
        infos = socket.getaddrinfo(host, None)
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    for found in addresses:
        ip = found.ipv4_mapped if isinstance(found, ipaddress.IPv6Address) else None
        if not (ip or found).is_loopback:
            raise NonLoopbackConnection(
                f"the test suite allows connections to 127.0.0.0/8 only, not to {host}"
            )


def _connect(self: socket.socket, address: Any) -> None:
    _check(self, address)
    _original_connect(self, address)


def _connect_ex(self: socket.socket, address: Any) -> int:
    _check(self, address)
    return _original_connect_ex(self, address)


def install() -> None:
    socket.socket.connect = _connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _connect_ex  # type: ignore[method-assign]
