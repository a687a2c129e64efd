"""The sign-in settings: `[auth]` and the WebSocket guards of `[server]`.

Kept out of gateway/config/ so that package only holds one field and one call for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gateway.signin.proxies import DEFAULT_TRUSTED_PROXIES, Network, parse_networks


class SettingsError(ValueError):
    """A sign-in setting cannot work; gateway/config/ turns it into a ConfigError."""


# `self` is the origin the request came to (its Host, on http or https); the loopback pages
# let a developer's page on another local port use a gateway on loopback.
DEFAULT_ORIGINS = ("self", "http://127.0.0.1:*", "http://localhost:*", "http://[::1]:*")

SERVER_KEYS = {"allowed_origins", "max_sockets_per_address", "trusted_proxies"}
AUTH_KEYS = {
    "token_secret",
    "token_audience",
    "token_issuer",
    "lockout_failures",
    "lockout_window",
    "lockout_time",
    "lockout_max_time",
    "failure_delay",
    "max_hash_checks",
}


@dataclass(frozen=True)
class SignInSettings:
    allowed_origins: tuple[str, ...] = DEFAULT_ORIGINS
    # Concurrent WebSockets from one client address (behind a trusted proxy, the address it
    # forwards for); 0: no cap. Many agents behind one NAT address need a higher value.
    max_sockets_per_address: int = 50
    # Reverse proxies whose X-Forwarded-For names the client (gateway/signin/proxies.py).
    trusted_proxies: tuple[Network, ...] = parse_networks(DEFAULT_TRUSTED_PROXIES)
    # HS256 secret for signed tokens (JWT) in `hello.token`; None: tokens are not accepted.
    token_secret: str | None = None
    token_audience: str | None = None
    token_issuer: str | None = None
    # This many failed hellos for one user or from one address within lockout_window seconds
    # lock it for lockout_time seconds, doubling with each lockout up to lockout_max_time.
    lockout_failures: int = 5
    lockout_window: float = 300.0
    lockout_time: float = 300.0
    lockout_max_time: float = 3600.0
    # Seconds a refused hello waits before its answer (the socket's other messages wait too).
    failure_delay: float = 0.5
    # Password-hash checks (argon2, ~50 ms of CPU each) running at once, in threads.
    max_hash_checks: int = 2

    def __repr__(self) -> str:
        # The token secret must not reach a log through repr().
        return f"SignInSettings(origins={self.allowed_origins!r}, ...)"


def _get(
    table: dict[str, Any], section: str, key: str, kinds: tuple[type, ...], default: Any
) -> Any:
    value = table.get(key, default)
    if value is default:
        return value
    if float in kinds and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        raise SettingsError(f"{section}.{key} must be {kinds[0].__name__}, not {value!r}")
    return value


def parse(server: dict[str, Any], auth: dict[str, Any]) -> SignInSettings:
    d = SignInSettings()
    origins = server.get("allowed_origins", list(d.allowed_origins))
    if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
        raise SettingsError(f"server.allowed_origins must be a list of strings, not {origins!r}")
    proxies = server.get("trusted_proxies", list(DEFAULT_TRUSTED_PROXIES))
    if not isinstance(proxies, list) or not all(isinstance(p, str) for p in proxies):
        raise SettingsError(f"server.trusted_proxies must be a list of strings, not {proxies!r}")
    try:
        trusted_proxies = parse_networks(proxies)
    except ValueError as exc:
        raise SettingsError(f"server.trusted_proxies: {exc}") from None
    settings = SignInSettings(
        allowed_origins=tuple(o.rstrip("/") for o in origins),
        trusted_proxies=trusted_proxies,
        max_sockets_per_address=_get(
            server, "server", "max_sockets_per_address", (int,), d.max_sockets_per_address
        ),
        token_secret=_get(auth, "auth", "token_secret", (str,), None),
        token_audience=_get(auth, "auth", "token_audience", (str,), None),
        token_issuer=_get(auth, "auth", "token_issuer", (str,), None),
        lockout_failures=_get(auth, "auth", "lockout_failures", (int,), d.lockout_failures),
        lockout_window=_get(auth, "auth", "lockout_window", (float,), d.lockout_window),
        lockout_time=_get(auth, "auth", "lockout_time", (float,), d.lockout_time),
        lockout_max_time=_get(auth, "auth", "lockout_max_time", (float,), d.lockout_max_time),
        failure_delay=_get(auth, "auth", "failure_delay", (float,), d.failure_delay),
        max_hash_checks=_get(auth, "auth", "max_hash_checks", (int,), d.max_hash_checks),
    )
    validate(settings)
    return settings


def validate(s: SignInSettings) -> None:
    if s.max_sockets_per_address < 0:
        raise SettingsError("server.max_sockets_per_address must be 0 (no cap) or more")
    if s.token_secret is not None and len(s.token_secret) < 32:
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits).
        raise SettingsError("auth.token_secret must be at least 32 characters")
    if s.lockout_failures < 1:
        raise SettingsError("auth.lockout_failures must be at least 1")
    for key in ("lockout_window", "lockout_time", "lockout_max_time"):
        if getattr(s, key) <= 0:
            raise SettingsError(f"auth.{key} must be positive")
    if s.lockout_max_time < s.lockout_time:
        raise SettingsError("auth.lockout_max_time must be at least auth.lockout_time")
    if not 0 <= s.failure_delay <= 10:
        raise SettingsError("auth.failure_delay must be 0-10 seconds")
    if s.max_hash_checks < 1:
        raise SettingsError("auth.max_hash_checks must be at least 1")
