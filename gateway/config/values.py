"""The configuration's value types: what a running gateway is told, already checked.

A leaf: besides the standard library and sipmessage it imports only other value-type
leaves (gateway/sip/values.py, gateway/media/values.py, gateway/policy.py,
gateway/signin/settings.py), never media, transport or UA code.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from sipmessage import URI

from gateway.media.values import IceServer
from gateway.policy import PolicySettings, Rules
from gateway.signin.settings import SignInSettings
from gateway.sip.values import (
    Credentials,
    GuardSettings,
    Peer,
    TlsSettings,
    TransportKind,
    peer_for_uri,
)


class ConfigError(ValueError):
    """The configuration cannot work; the message names the key and what is wrong."""


@dataclass(frozen=True)
class Trunk:
    """A SIP account or trunk: where outbound calls go, and maybe where we register."""

    uri: URI
    credentials: Credentials | None = None
    # The user part and domain of From; the trunk decides what it accepts.
    from_user: str = "sipgw"
    from_domain: str | None = None
    name: str = "trunk"
    register: bool = False
    expires: int = 600
    outbound_proxy: URI | None = None
    # Dialled numbers (after normalisation) starting with one of these go to this account.
    prefixes: tuple[str, ...] = ()
    # Carriers that want the caller's identity asserted (RFC 3325) get P-Asserted-Identity.
    asserted_identity: bool = False
    # Whether the far end may transfer our users elsewhere with REFER.
    allow_refer: bool = False
    # Dialling policy of calls through this account (allow, deny, max_calls).
    policy: Rules = field(default_factory=Rules)
    # How a 3xx Contact or Refer-To is followed: "user" (its user part, routed as if
    # dialled), "uri" (to its host, never with our credentials) or "none".
    redirect: str = "user"

    @property
    def peer(self) -> Peer:
        hop = self.outbound_proxy or self.uri
        return peer_for_uri(hop, Peer(TransportKind.UDP, hop.host, 5060))

    @property
    def domain(self) -> str:
        return self.from_domain or self.uri.host


@dataclass(frozen=True)
class User:
    """A browser user: who `hello` says it is, and how the phone network sees it."""

    name: str
    # Kept out of repr() so they never reach a log.
    password: str | None = field(default=None, repr=False)
    # An argon2id hash from `sipgw hash-password`; preferred over a plain-text password.
    password_hash: str | None = field(default=None, repr=False)
    extension: str | None = None
    display_name: str | None = None
    # The number presented on outbound calls (From user part).
    caller_id: str | None = None
    # What this user may dial and how many calls at once (unset caps: [policy]'s).
    policy: Rules = field(default_factory=Rules)


@dataclass(frozen=True)
class DialPlan:
    """How typed numbers become what trunks expect (E.164 when a country code is set)."""

    country_code: str | None = None
    international_prefix: str = "00"
    national_prefix: str = "0"


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    http_port: int = 8080
    # Gateway processes sharing the machine (one per core carries the most calls).
    workers: int = 1
    sip_host: str | None = None
    sip_port: int = 5060
    sip_transports: tuple[TransportKind, ...] = (TransportKind.UDP, TransportKind.TCP)
    sip_tls: TlsSettings | None = None
    # Trusted sources and the per-source rate limit (gateway/sip/guard.py).
    sip_guard: GuardSettings = field(default_factory=GuardSettings)
    # The address put in Contact, Via and SDP c= when the bind address is not reachable
    # from the SIP peer (behind NAT, or bound to 0.0.0.0).
    public_address: str | None = None
    trunk: Trunk | None = None
    accounts: tuple[Trunk, ...] = ()
    users: tuple[User, ...] = ()
    dial_plan: DialPlan = DialPlan()
    policy: PolicySettings = field(default_factory=PolicySettings)
    # Inbound calls: how long browsers ring before the caller gets 480.
    ring_timeout: float = 30.0
    # A connected call whose SIP-side RTP stops this long (not on hold) is ended with BYE.
    rtp_timeout: float = 60.0
    # RFC 4028 Min-SE: shorter session intervals asked for by a caller get 422.
    min_session_expires: int = 90
    # RFC 4028 Session-Expires on our INVITEs (0: none), so a far end ends calls we left.
    session_expires: int = 1800
    rtp_port_min: int = 20000
    rtp_port_max: int = 30000
    # Strict RTP: packets from a source the SDP did not name must come this many in a row
    # (one SSRC, consecutive sequence numbers) before that source is taken as the peer.
    rtp_probation: int = 4
    ice_addresses: tuple[str, ...] | None = None
    ice_servers: tuple[IceServer, ...] = ()
    # TURN REST API (coturn use-auth-secret): each session gets credentials valid turn_ttl s.
    turn_urls: tuple[str, ...] = ()
    turn_secret: str | None = None
    turn_ttl: int = 86400
    ice_transport_policy: str = "all"
    no_answer_timeout: float = 60.0
    sip_t1: float = 0.5
    demo_echo_extension: str = "600"
    demo_tone_extension: str = "601"
    demo_tone_frequency: float = 440.0
    # [auth] and the WebSocket guards of [server] (gateway/signin/settings.py).
    signin: SignInSettings = field(default_factory=SignInSettings)

    @property
    def sip_bind(self) -> str:
        return self.sip_host or self.host

    @property
    def advertised_address(self) -> str:
        if self.public_address:
            return self.public_address
        bind = self.sip_bind
        return "127.0.0.1" if bind in ("0.0.0.0", "::") else bind

    @property
    def demo_mode(self) -> bool:
        return self.trunk is None and not self.accounts

    @property
    def all_accounts(self) -> tuple[Trunk, ...]:
        return ((self.trunk,) if self.trunk else ()) + self.accounts

    def user(self, name: str) -> User | None:
        return next((u for u in self.users if u.name == name), None)

    def user_by_extension(self, extension: str) -> User | None:
        return next((u for u in self.users if extension in (u.extension, u.name)), None)

    def effective_ice_addresses(self) -> tuple[str, ...] | None:
        """Loopback deployments must offer a loopback candidate, which aioice never gathers."""
        if self.ice_addresses is not None:
            return self.ice_addresses
        try:
            if ipaddress.ip_address(self.host).is_loopback:
                return (self.host,)
        except ValueError:
            pass
        return None
