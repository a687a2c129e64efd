"""Which pages may open the WebSocket: the Origin check at the upgrade (RFC 6455 10.2).

Without it any website a user visits could open `ws://gateway/ws` from the user's browser
and, with no [[users]] (or a password the page remembers), dial out through the trunk.
Browsers always send Origin on a WebSocket upgrade; a request without one comes from a
program (a test client, a contact centre's server), which no web page can make the user's
browser send, so it is let through: the check is against cross-site pages, not programs.

Patterns: an exact origin (`https://phone.example.com`), one with a wildcard port
(`http://127.0.0.1:*`), `self` (the origin the request came to: its Host, on http or https)
and `*` (any page).
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_LOOPBACK_NAMES = {"localhost", "localhost.localdomain"}


def host_is_loopback(host: str) -> bool:
    host = host.strip("[]").lower()
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _split(origin: str) -> tuple[str, str, int | None] | None:
    try:
        parts = urlsplit(origin)
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    if parts.path or parts.query or parts.fragment or parts.username or parts.password:
        return None
    if port is None:
        port = 443 if parts.scheme == "https" else 80
    return parts.scheme, parts.hostname.lower(), port


def _matches(pattern: str, origin: tuple[str, str, int | None]) -> bool:
    if pattern.endswith(":*"):
        wanted = _split(pattern[:-2])
        return wanted is not None and wanted[:2] == origin[:2]
    wanted = _split(pattern)
    return wanted is not None and wanted == origin


def origin_allowed(
    origin: str | None, host: str | None, allowed: tuple[str, ...], *, gateway_on_loopback: bool
) -> bool:
    if origin is None:
        return True
    if "*" in allowed:
        return True
    page = _split(origin)
    if page is None:
        return False  # "null" (a sandboxed frame, a file: page) and anything malformed
    for pattern in allowed:
        if pattern == "self":
            if host is None:
                continue
            # DNS rebinding: a hostile name pointed at 127.0.0.1 makes Host equal that name.
            # A gateway on loopback only counts loopback names and addresses as itself.
            request_host = _split(f"http://{host}")
            if request_host is None:
                continue
            if gateway_on_loopback and not host_is_loopback(request_host[1]):
                continue
            for scheme in ("http", "https"):
                if _matches(f"{scheme}://{host}", page):
                    return True
        elif _matches(pattern, page):
            return True
    return False
