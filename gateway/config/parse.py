"""From a TOML file or a mapping to a checked `Config`; unknown keys are refused by name."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path
from typing import Any

from sipmessage import URI

from gateway.config.validate import validate
from gateway.config.values import Config, ConfigError, DialPlan, Trunk, User
from gateway.media.values import IceServer
from gateway.policy import (
    RULE_KEYS,
    SETTING_KEYS,
    PolicyError,
    parse_rules,
    parse_settings,
)
from gateway.signin import passwords
from gateway.signin import settings as signin_settings
from gateway.signin.settings import SignInSettings
from gateway.sip.values import Credentials, GuardSettings, TlsSettings, TransportKind


def parse_trunk(
    uri: str,
    *,
    username: str | None = None,
    password: str | None = None,
    realm: str | None = None,
    from_user: str | None = None,
    from_domain: str | None = None,
    section: str = "trunk",
) -> Trunk:
    text = uri if uri.startswith(("sip:", "sips:")) else f"sip:{uri}"
    try:
        parsed = URI.parse(text)
    except ValueError:
        raise ConfigError(
            f"{section}: {uri!r} is not a SIP URI like sip:host[:port][;transport=udp|tcp]"
        ) from None
    transport = (parsed.parameters.get("transport") or "udp").upper()
    if transport not in ("UDP", "TCP", "TLS"):
        raise ConfigError(f"{section}: transport {transport.lower()!r} is not udp, tcp or tls")
    credentials = None
    if username:
        if password is None:
            raise ConfigError(f"{section}: a username needs a password")
        credentials = Credentials(username=username, password=password, realm=realm)
    return Trunk(
        uri=parsed,
        credentials=credentials,
        from_user=from_user or username or "sipgw",
        from_domain=from_domain,
    )


_KEYS = {
    "server": {"host", "http_port", "workers"} | signin_settings.SERVER_KEYS,
    "auth": signin_settings.AUTH_KEYS,
    "sip": {"host", "port", "transports", "public_address", "t1", "tls"}
    | {"trusted", "rate_limit", "rate_burst", "block_seconds"},
    "sip.tls": {"certfile", "keyfile", "cafile", "verify_peer", "server_name"},
    "trunk": {
        "uri",
        "username",
        "password",
        "realm",
        "from_user",
        "from_domain",
        "name",
        "register",
        "expires",
        "outbound_proxy",
        "prefixes",
        "asserted_identity",
        "allow_refer",
        "redirect",
        *(RULE_KEYS - {"calls_per_minute"}),
    },
    "accounts": set(),
    "users": {
        "name",
        "password",
        "password_hash",
        "extension",
        "display_name",
        "caller_id",
        *RULE_KEYS,
    },
    "policy": SETTING_KEYS,
    "dialing": {"country_code", "international_prefix", "national_prefix"},
    "media": {
        "rtp_port_min",
        "rtp_port_max",
        "rtp_probation",
        "ice_addresses",
        "ice_servers",
        "turn_urls",
        "turn_secret",
        "turn_ttl",
        "ice_transport_policy",
    },
    "calls": {
        "no_answer_timeout",
        "ring_timeout",
        "rtp_timeout",
        "min_session_expires",
        "session_expires",
    },
    "demo": {"echo_extension", "tone_extension", "tone_frequency"},
}


def _section(data: dict[str, Any], name: str, keys: str | None = None) -> dict[str, Any]:
    value = data.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"[{name}] must be a table")
    unknown = sorted(set(value) - _KEYS[keys or name])
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


def _tables(data: dict[str, Any], name: str) -> list[dict[str, Any]]:
    value = data.get(name, [])
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{name} must be an array of tables: [[{name}]]")
    return value


def _trunk_from_table(section: str, table: dict[str, Any], default_name: str) -> Trunk:
    wrapper = {"trunk": table}
    _section(wrapper, "trunk")
    uri = _typed(section, table, "uri", str, None)
    if uri is None:
        raise ConfigError(f"{section}.uri is required")
    trunk = parse_trunk(
        uri,
        username=_typed(section, table, "username", str, None),
        password=_typed(section, table, "password", str, None),
        realm=_typed(section, table, "realm", str, None),
        from_user=_typed(section, table, "from_user", str, None),
        from_domain=_typed(section, table, "from_domain", str, None),
        section=section,
    )
    proxy = _typed(section, table, "outbound_proxy", str, None)
    prefixes = _string_list(section, table, "prefixes") or []
    register = _typed(section, table, "register", bool, False)
    if register and trunk.credentials is None:
        raise ConfigError(f"{section}.register needs username and password")
    return replace(
        trunk,
        name=_typed(section, table, "name", str, default_name),
        register=register,
        expires=_positive(section, table, "expires", 600),
        outbound_proxy=parse_trunk(proxy).uri if proxy else None,
        prefixes=tuple(prefixes),
        asserted_identity=_typed(section, table, "asserted_identity", bool, False),
        allow_refer=_typed(section, table, "allow_refer", bool, False),
        policy=_policy(parse_rules, section, table),
        redirect=_choice(section, table, "redirect", ("user", "uri", "none")),
    )


def _choice(section: str, table: dict[str, Any], key: str, choices: tuple[str, ...]) -> str:
    value: str = _typed(section, table, key, str, choices[0])
    if value not in choices:
        raise ConfigError(f"{section}.{key} must be one of {', '.join(choices)}, not {value!r}")
    return value


def _policy(parse: Any, *args: Any) -> Any:
    try:
        return parse(*args)
    except PolicyError as exc:
        raise ConfigError(str(exc)) from None


def _country_code(dialing: dict[str, Any]) -> str | None:
    value: str | None = _typed("dialing", dialing, "country_code", str, None)
    if value is None:
        return None
    code = value.lstrip("+")
    if not code.isdigit() or not 1 <= len(code) <= 3:
        raise ConfigError(f"dialing.country_code must be 1-3 digits like 49, not {value!r}")
    return code


def _tls(sip: dict[str, Any]) -> TlsSettings | None:
    table = _section(sip, "tls", "sip.tls")
    if not table:
        return None
    certfile = _typed("sip.tls", table, "certfile", str, None)
    keyfile = _typed("sip.tls", table, "keyfile", str, None)
    if not certfile or not keyfile:
        raise ConfigError("sip.tls needs certfile and keyfile")
    return TlsSettings(
        certfile=certfile,
        keyfile=keyfile,
        cafile=_typed("sip.tls", table, "cafile", str, None),
        verify_peer=_typed("sip.tls", table, "verify_peer", bool, True),
        server_name=_typed("sip.tls", table, "server_name", str, None),
    )


def _guard(sip: dict[str, Any]) -> GuardSettings:
    d, trusted = GuardSettings(), _string_list("sip", sip, "trusted")
    try:
        return GuardSettings(
            trusted=tuple(trusted) if trusted is not None else None,
            rate_limit=_typed("sip", sip, "rate_limit", float, d.rate_limit),
            rate_burst=_typed("sip", sip, "rate_burst", int, d.rate_burst),
            block_seconds=_typed("sip", sip, "block_seconds", float, d.block_seconds),
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _positive(section: str, table: dict[str, Any], key: str, default: int) -> int:
    value: int = _typed(section, table, key, int, default)
    if value <= 0:
        raise ConfigError(f"{section}.{key} must be positive")
    return value


def _users(data: dict[str, Any]) -> tuple[User, ...]:
    users = []
    for table in _tables(data, "users"):
        _section({"users": table}, "users")
        name = _typed("users", table, "name", str, None)
        if not name:
            raise ConfigError("users.name is required for every [[users]] entry")
        password = _typed("users", table, "password", str, None)
        password_hash = _typed("users", table, "password_hash", str, None)
        if password is not None and password_hash is not None:
            raise ConfigError(f"users: {name!r} has both password and password_hash")
        if password_hash is not None and not passwords.is_hash(password_hash):
            raise ConfigError(f"users: {name!r}: password_hash is not from `sipgw hash-password`")
        users.append(
            User(
                name=name,
                password=password,
                password_hash=password_hash,
                extension=_typed("users", table, "extension", str, None),
                display_name=_typed("users", table, "display_name", str, None),
                caller_id=_typed("users", table, "caller_id", str, None),
                policy=_policy(parse_rules, f"users.{name}", table),
            )
        )
    names = [u.name for u in users]
    extensions = [u.extension for u in users if u.extension]
    if len(set(names)) != len(names) or len(set(extensions)) != len(extensions):
        raise ConfigError("users: names and extensions must be unique")
    return tuple(users)


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
    trunk_table = data.get("trunk", {})
    if not isinstance(trunk_table, dict):
        raise ConfigError("[trunk] must be a table")
    trunk = _trunk_from_table("trunk", trunk_table, "trunk") if trunk_table else None
    accounts = tuple(
        _trunk_from_table("accounts", table, f"account{i + 1}")
        for i, table in enumerate(_tables(data, "accounts"))
    )
    dialing = _section(data, "dialing")
    ice_servers = _ice_servers(media)
    ice_addresses = _string_list("media", media, "ice_addresses")
    names = _string_list("sip", sip, "transports")
    if names is None:
        names = ["udp", "tcp"]
    if not names or not {n.upper() for n in names} <= {"UDP", "TCP", "TLS"}:
        raise ConfigError(f"sip.transports may hold udp, tcp and tls only, not {names!r}")
    transports = tuple(dict.fromkeys(TransportKind(n.upper()) for n in names))
    tls = _tls(sip)
    if TransportKind.TLS in transports and tls is None:
        raise ConfigError("sip.transports has tls: [sip.tls] needs certfile and keyfile")
    config = replace(
        d,
        host=_typed("server", server, "host", str, d.host),
        http_port=_typed("server", server, "http_port", int, d.http_port),
        workers=_typed("server", server, "workers", int, d.workers),
        sip_host=_typed("sip", sip, "host", str, d.sip_host),
        sip_port=_typed("sip", sip, "port", int, d.sip_port),
        sip_transports=transports,
        sip_tls=tls,
        sip_guard=_guard(sip),
        public_address=_typed("sip", sip, "public_address", str, d.public_address),
        sip_t1=_typed("sip", sip, "t1", float, d.sip_t1),
        trunk=trunk,
        accounts=accounts,
        users=_users(data),
        policy=_policy(parse_settings, _section(data, "policy")),
        dial_plan=DialPlan(
            country_code=_country_code(dialing),
            international_prefix=_typed("dialing", dialing, "international_prefix", str, "00"),
            national_prefix=_typed("dialing", dialing, "national_prefix", str, "0"),
        ),
        ring_timeout=_typed("calls", calls, "ring_timeout", float, d.ring_timeout),
        rtp_timeout=_typed("calls", calls, "rtp_timeout", float, d.rtp_timeout),
        min_session_expires=_positive("calls", calls, "min_session_expires", d.min_session_expires),
        session_expires=_typed("calls", calls, "session_expires", int, d.session_expires),
        rtp_port_min=_typed("media", media, "rtp_port_min", int, d.rtp_port_min),
        rtp_port_max=_typed("media", media, "rtp_port_max", int, d.rtp_port_max),
        rtp_probation=_positive("media", media, "rtp_probation", d.rtp_probation),
        ice_addresses=tuple(ice_addresses) if ice_addresses is not None else None,
        ice_servers=ice_servers,
        turn_urls=tuple(_string_list("media", media, "turn_urls") or ()),
        turn_secret=_typed("media", media, "turn_secret", str, None),
        turn_ttl=_typed("media", media, "turn_ttl", int, d.turn_ttl),
        ice_transport_policy=_typed(
            "media", media, "ice_transport_policy", str, d.ice_transport_policy
        ),
        no_answer_timeout=_typed("calls", calls, "no_answer_timeout", float, d.no_answer_timeout),
        demo_echo_extension=_typed("demo", demo, "echo_extension", str, d.demo_echo_extension),
        demo_tone_extension=_typed("demo", demo, "tone_extension", str, d.demo_tone_extension),
        demo_tone_frequency=_typed("demo", demo, "tone_frequency", float, d.demo_tone_frequency),
        signin=_signin(data, server),
    )
    validate(config)
    return config


def _signin(data: dict[str, Any], server: dict[str, Any]) -> SignInSettings:
    try:
        return signin_settings.parse(server, _section(data, "auth"))
    except signin_settings.SettingsError as exc:
        raise ConfigError(str(exc)) from None
