"""The page's own address behind a reverse proxy.

Behind nginx (docs/deploy.md) every WebSocket comes from the proxy's address, so a per-address
lockout or socket cap keyed on it would lock out, or cap, every user at once, and fail2ban
would ban the proxy. The proxy says who it forwards for in X-Forwarded-For; that header is
believed only from `server.trusted_proxies` (default: loopback, where the documented nginx
runs), and read from the right: each trusted hop appends the address it received from, so
the rightmost address that is not a trusted proxy is the one no client could forge.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_TRUSTED_PROXIES = ("127.0.0.1/32", "::1/128")


def parse_networks(values: Sequence[str]) -> tuple[Network, ...]:
    """CIDRs (or single addresses); ValueError names the bad one."""
    networks = []
    for value in values:
        try:
            networks.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{value!r} is not an address or CIDR") from None
    return tuple(networks)


def _trusted(address: str, proxies: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(
    remote: str | None, forwarded_for: str | None, proxies: tuple[Network, ...]
) -> str:
    """The client's address: `remote`, or what a trusted proxy says it forwards for."""
    address = remote or "-"
    if not forwarded_for or not _trusted(address, proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        try:
            ipaddress.ip_address(hop)
        except ValueError:
            return address  # garbage in the chain: believe only the proxy's own address
        if not _trusted(hop, proxies):
            return hop
        address = hop
    return address
