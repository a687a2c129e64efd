"""SIP value types: transports, peers, TLS and guard settings, account credentials.

A leaf: it imports only the standard library and sipmessage, so that the configuration
(gateway/config/) can name these types without loading the transport, transaction or
UA code. The modules that use them re-export them under their old names.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sipmessage import URI


class TransportKind(StrEnum):
    UDP = "UDP"
    TCP = "TCP"
    TLS = "TLS"


@dataclass(frozen=True)
class Peer:
    """Where a message came from, and so where its answer goes (symmetric, like rport)."""

    transport: TransportKind
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


@dataclass(frozen=True)
class TlsSettings:
    """Our certificate, and how we check the peers we connect to.

    `cafile` None means the system's trust store. `verify_peer` False accepts any server
    certificate (a lab PBX with a self-signed one), at the cost of any protection against
    a man in the middle. `server_name` replaces the peer's host as the name the server
    certificate must carry and as SNI, for a trunk reached by address but certified by name.
    We do not ask connecting clients for certificates (most SIP phones have none).
    """

    certfile: Path | str
    keyfile: Path | str
    cafile: Path | str | None = None
    verify_peer: bool = True
    server_name: str | None = None

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(
            cafile=str(self.cafile) if self.cafile is not None else None
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if not self.verify_peer:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        # Offered to servers that ask for a client certificate (mutual TLS trunks).
        context.load_cert_chain(self.certfile, self.keyfile)
        return context


@dataclass(frozen=True)
class GuardSettings:
    # CIDRs trusted besides the accounts' hosts; None: loopback only (LOOPBACK).
    trusted: tuple[str, ...] | None = None
    # Requests per second per untrusted source, and the burst above it; 0 turns pike off.
    rate_limit: float = 20.0
    rate_burst: int = 50
    block_seconds: float = 60.0

    def __post_init__(self) -> None:
        for cidr in self.trusted or ():
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(f"sip.trusted: {cidr!r} is not an address or CIDR") from None
        if self.rate_limit < 0:
            raise ValueError("sip.rate_limit must be 0 (off) or more")
        if self.rate_burst < 1 or self.block_seconds <= 0:
            raise ValueError("sip.rate_burst and sip.block_seconds must be positive")


@dataclass(frozen=True)
class Credentials:
    """A SIP account. If `realm` is set, only challenges for that realm are answered."""

    username: str
    password: str
    realm: str | None = None

    # Written out so that logging a Credentials never prints the password.
    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', realm={self.realm!r})"


def peer_for_uri(uri: URI, default: Peer) -> Peer:
    """The next hop for a SIP URI; the transport defaults to the one the dialog began on.

    A sips: URI is always reached over TLS (RFC 3261 section 26.2.2; its transport=tcp
    names the layer under TLS, RFC 5630 section 3.1.3); the deprecated transport=tls of a
    sip: URI is honoured too. TLS's default port is 5061 (section 19.1.2).
    """
    transport = default.transport
    param = (uri.parameters.get("transport") or "").upper()
    if uri.scheme.lower() == "sips":
        transport = TransportKind.TLS
    elif param in TransportKind.__members__:
        transport = TransportKind(param)
    default_port = 5061 if transport is TransportKind.TLS else 5060
    return Peer(transport, uri.host.strip("[]"), uri.port or default_port)
