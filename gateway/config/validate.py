"""Checks across settings that no single key's parser can make."""

from __future__ import annotations

from gateway.config.values import Config, ConfigError


def validate(config: Config) -> None:
    for check in (_ports, _calls, _media, _accounts):
        check(config)


def _ports(config: Config) -> None:
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
    if not 1 <= config.workers <= 64:
        raise ConfigError("server.workers must be 1-64")
    if config.workers > 1 and config.http_port == 0:
        raise ConfigError("server.workers > 1 needs a fixed server.http_port (they share it)")


def _calls(config: Config) -> None:
    if config.sip_t1 <= 0:
        raise ConfigError("sip.t1 must be positive")
    for key in ("no_answer_timeout", "ring_timeout", "rtp_timeout"):
        if getattr(config, key) <= 0:
            raise ConfigError(f"calls.{key} must be positive")
    if config.session_expires and config.session_expires < config.min_session_expires:
        raise ConfigError("calls.session_expires must be 0 (off) or at least min_session_expires")


def _media(config: Config) -> None:
    if config.ice_transport_policy not in ("all", "relay"):
        raise ConfigError('media.ice_transport_policy must be "all" or "relay"')
    if bool(config.turn_urls) != bool(config.turn_secret):
        raise ConfigError("media.turn_urls and media.turn_secret go together")
    if config.turn_ttl <= 0:
        raise ConfigError("media.turn_ttl must be positive")


def _accounts(config: Config) -> None:
    for account in config.all_accounts:
        if account.peer.transport not in config.sip_transports:
            raise ConfigError(
                f"account {account.name!r} needs {account.peer.transport.lower()} in sip.transports"
            )
    names = [a.name for a in config.all_accounts]
    if len(set(names)) != len(names):
        raise ConfigError("accounts: names must be unique")
    if not config.sip_transports:
        raise ConfigError("sip.transports must name udp, tcp or tls")
