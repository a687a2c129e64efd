"""Configuration: defaults, a TOML file, then command-line flags, in that order of strength."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sipmessage import URI

from gateway.media.browser_leg import IceServer
from gateway.sip.auth import Credentials
from gateway.sip.transport import Peer, TransportKind


class ConfigError(ValueError):
    """The configuration cannot work; the message names the key and what is wrong."""


@dataclass(frozen=True)
class Trunk:
    """Where outbound calls go: a SIP trunk, a PBX, or a proxy."""

    uri: URI
    credentials: Credentials | None = None
    # The user part and domain of From; the trunk decides what it accepts.
    from_user: str = "sipgw"
    from_domain: str | None = None

    @property
    def peer(self) -> Peer:
        transport = (self.uri.parameters.get("transport") or "udp").upper()
        return Peer(TransportKind(transport), self.uri.host.strip("[]"), self.uri.port or 5060)

    @property
    def domain(self) -> str:
        return self.from_domain or self.uri.host


@dataclass(frozen=True)
class Config:
    host: str = "127.0.0.1"
    http_port: int = 8080
    sip_host: str | None = None
    sip_port: int = 5060
    sip_transports: tuple[TransportKind, ...] = (TransportKind.UDP, TransportKind.TCP)
    # The address put in Contact, Via and SDP c= when the bind address is not reachable
    # from the SIP peer (behind NAT, or bound to 0.0.0.0).
    public_address: str | None = None
    trunk: Trunk | None = None
    rtp_port_min: int = 20000
    rtp_port_max: int = 30000
    ice_addresses: tuple[str, ...] | None = None
    ice_servers: tuple[IceServer, ...] = ()
    no_answer_timeout: float = 60.0
    sip_t1: float = 0.5
    demo_echo_extension: str = "600"
    demo_tone_extension: str = "601"
    demo_tone_frequency: float = 440.0

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
        return self.trunk is None

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


def parse_trunk(
    uri: str,
    *,
    username: str | None = None,
    password: str | None = None,
    realm: str | None = None,
    from_user: str | None = None,
    from_domain: str | None = None,
) -> Trunk:
    if uri.startswith("sips:"):
        raise ConfigError("trunk: sips: (SIP over TLS) is not supported yet; use sip:")
    text = uri if uri.startswith("sip:") else f"sip:{uri}"
    try:
        parsed = URI.parse(text)
    except ValueError:
        raise ConfigError(
            f"trunk: {uri!r} is not a SIP URI like sip:host[:port][;transport=udp|tcp]"
        ) from None
    transport = (parsed.parameters.get("transport") or "udp").upper()
    if transport not in ("UDP", "TCP"):
        raise ConfigError(f"trunk: transport {transport.lower()!r} is not udp or tcp")
    credentials = None
    if username:
        if password is None:
            raise ConfigError("trunk: a username needs a password")
        credentials = Credentials(username=username, password=password, realm=realm)
    return Trunk(
        uri=parsed,
        credentials=credentials,
        from_user=from_user or username or "sipgw",
        from_domain=from_domain,
    )


_KEYS = {
    "server": {"host", "http_port"},
    "sip": {"host", "port", "transports", "public_address", "t1"},
    "trunk": {"uri", "username", "password", "realm", "from_user", "from_domain"},
    "media": {"rtp_port_min", "rtp_port_max", "ice_addresses", "ice_servers"},
    "calls": {"no_answer_timeout"},
    "demo": {"echo_extension", "tone_extension", "tone_frequency"},
}


def _section(data: dict[str, Any], name: str) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(value) - _KEYS[name])
    if unknown:
        # A typo must not silently fall back to a default.
        raise ConfigError(f"unknown key(s): {', '.join(f'{name}.{k}' for k in unknown)}")
    return value


def _string_list(section: str, table: dict[str, Any], key: str) -> list[str] | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{section}.{key} must be a list of strings, not {value!r}")
    return value


def _ice_servers(media: dict[str, Any]) -> tuple[IceServer, ...]:
    entries = media.get("ice_servers", [])
    if not isinstance(entries, list):
        raise ConfigError("media.ice_servers must be a list of tables")
    servers = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("urls"), str | list):
            raise ConfigError(
                f"media.ice_servers entries must be tables with urls, like "
                f'{{ urls = "turn:host:3478", username = "u", credential = "p" }}, not {entry!r}'
            )
        urls = entry["urls"]
        urls = [urls] if isinstance(urls, str) else urls
        if not urls or not all(isinstance(u, str) for u in urls):
            raise ConfigError("media.ice_servers urls must be strings")
        for key in ("username", "credential"):
            if key in entry and not isinstance(entry[key], str):
                raise ConfigError(f"media.ice_servers {key} must be a string")
        servers.append(
            IceServer(
                urls=tuple(urls), username=entry.get("username"), credential=entry.get("credential")
            )
        )
    return tuple(servers)


def _typed(section: str, table: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = table.get(key, default)
    if value is default:
        return value
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{section}.{key} must be {kind.__name__}, not {value!r}")
    return value


def from_toml(path: Path) -> Config:
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    return from_mapping(data)


def from_mapping(data: dict[str, Any]) -> Config:
    known = set(_KEYS)
    unknown = set(data) - known
    if unknown:
        raise ConfigError(f"unknown section(s): {', '.join(sorted(unknown))}")
    d = Config()
    server = _section(data, "server")
    sip = _section(data, "sip")
    media = _section(data, "media")
    calls = _section(data, "calls")
    demo = _section(data, "demo")
    trunk_table = _section(data, "trunk")
    trunk = None
    if trunk_table:
        uri = _typed("trunk", trunk_table, "uri", str, None)
        if uri is None:
            raise ConfigError("trunk.uri is required when [trunk] is present")
        trunk = parse_trunk(
            uri,
            username=_typed("trunk", trunk_table, "username", str, None),
            password=_typed("trunk", trunk_table, "password", str, None),
            realm=_typed("trunk", trunk_table, "realm", str, None),
            from_user=_typed("trunk", trunk_table, "from_user", str, None),
            from_domain=_typed("trunk", trunk_table, "from_domain", str, None),
        )
    ice_servers = _ice_servers(media)
    ice_addresses = _string_list("media", media, "ice_addresses")
    names = _string_list("sip", sip, "transports")
    if names is None:
        names = ["udp", "tcp"]
    if not names or not {n.upper() for n in names} <= {"UDP", "TCP"}:
        raise ConfigError(f"sip.transports may hold udp and tcp only, not {names!r}")
    transports = tuple(dict.fromkeys(TransportKind(n.upper()) for n in names))
    config = replace(
        d,
        host=_typed("server", server, "host", str, d.host),
        http_port=_typed("server", server, "http_port", int, d.http_port),
        sip_host=_typed("sip", sip, "host", str, d.sip_host),
        sip_port=_typed("sip", sip, "port", int, d.sip_port),
        sip_transports=transports,
        public_address=_typed("sip", sip, "public_address", str, d.public_address),
        sip_t1=_typed("sip", sip, "t1", float, d.sip_t1),
        trunk=trunk,
        rtp_port_min=_typed("media", media, "rtp_port_min", int, d.rtp_port_min),
        rtp_port_max=_typed("media", media, "rtp_port_max", int, d.rtp_port_max),
        ice_addresses=tuple(ice_addresses) if ice_addresses is not None else None,
        ice_servers=ice_servers,
        no_answer_timeout=_typed("calls", calls, "no_answer_timeout", float, d.no_answer_timeout),
        demo_echo_extension=_typed("demo", demo, "echo_extension", str, d.demo_echo_extension),
        demo_tone_extension=_typed("demo", demo, "tone_extension", str, d.demo_tone_extension),
        demo_tone_frequency=_typed("demo", demo, "tone_frequency", float, d.demo_tone_frequency),
    )
    validate(config)
    return config


def validate(config: Config) -> None:
    if not (
        1024 <= config.rtp_port_min and config.rtp_port_min + 2 <= config.rtp_port_max <= 65535
    ):
        raise ConfigError(
            "media.rtp_port_min/max must be a range within 1024-65535 holding at least one "
            "RTP/RTCP port pair"
        )
    if not 0 <= config.sip_port <= 65535:
        raise ConfigError("sip.port must be 0-65535 (0: any free port)")
    if not 0 <= config.http_port <= 65535:
        raise ConfigError("server.http_port must be 0-65535")
    if config.sip_t1 <= 0:
        raise ConfigError("sip.t1 must be positive")
    if config.no_answer_timeout <= 0:
        raise ConfigError("calls.no_answer_timeout must be positive")
    if not config.sip_transports:
        raise ConfigError("sip.transports must name udp, tcp or both")
