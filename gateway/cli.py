"""`sipgw run`: the whole gateway in one process."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

from gateway import config as cfg
from gateway import runtime, workers
from gateway.signin import cli as signin_cli

log = logging.getLogger("sipgw")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipgw",
        description="WebRTC-to-SIP gateway: a browser softphone that calls SIP trunks and PBXs.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run",
        help="start the web page, WebSocket signalling, SIP user agent and media bridge",
        description=(
            "Start the gateway. With no trunk, calls go to an embedded demo endpoint on "
            "loopback: extension 600 echoes your voice, 601 plays a tone."
        ),
    )
    run.add_argument("--config", type=Path, help="TOML configuration file (flags override it)")
    run.add_argument("--host", help="address for the web page and WebSocket (default 127.0.0.1)")
    run.add_argument("--http-port", type=int, help="port of the web page (default 8080)")
    run.add_argument("--sip-host", help="address the SIP user agent binds (default: --host)")
    run.add_argument("--sip-port", type=int, help="SIP port, UDP and TCP (default 5060; 0 = any)")
    run.add_argument(
        "--trunk",
        metavar="URI",
        help="send calls to this SIP peer: sip:host[:port][;transport=udp|tcp]",
    )
    run.add_argument("--trunk-user", help="username for digest authentication at the trunk")
    run.add_argument("--trunk-password", help="password for digest authentication at the trunk")
    run.add_argument("--public-address", help="address put in Contact, Via and SDP when behind NAT")
    run.add_argument("--rtp-ports", metavar="MIN-MAX", help="RTP port range (default 20000-30000)")
    run.add_argument(
        "--ice-address",
        action="append",
        help="address to offer ICE candidates on (repeatable; default: 127.0.0.1 when --host "
        "is loopback, else every interface)",
    )
    run.add_argument(
        "--workers",
        type=int,
        help="gateway processes sharing the HTTP port (default 1; one per core carries most)",
    )
    run.add_argument("--no-answer-timeout", type=float, help="seconds to ring (default 60)")
    run.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        help="-v: debug logging of calls and media; -vv: also every SIP message",
    )
    hash_password = sub.add_parser(
        "hash-password",
        help="print the argon2id hash of a password, for password_hash in [[users]]",
        description="Reads the password from a prompt, or from stdin when it is not a terminal.",
    )
    hash_password.set_defaults(verbose=0)
    token = sub.add_parser(
        "token",
        help="print a signed sign-in token (JWT) for USER, for hello.token",
        description="Signs with [auth] token_secret of --config (aud/iss from token_audience "
        "and token_issuer). For tests and operations; applications mint their own.",
    )
    token.add_argument("user", help="the user name (the token's sub)")
    token.add_argument("--config", type=Path, help="TOML configuration file with [auth]")
    token.add_argument("--ttl", type=int, default=3600, help="seconds it is valid (3600)")
    token.set_defaults(verbose=0)
    return parser


def config_from_args(args: argparse.Namespace) -> cfg.Config:
    config = cfg.from_toml(args.config) if args.config else cfg.Config()
    changes: dict[str, object] = {}
    for flag, key in (
        ("host", "host"),
        ("http_port", "http_port"),
        ("workers", "workers"),
        ("sip_host", "sip_host"),
        ("sip_port", "sip_port"),
        ("public_address", "public_address"),
        ("no_answer_timeout", "no_answer_timeout"),
    ):
        value = getattr(args, flag)
        if value is not None:
            changes[key] = value
    trunk = _trunk_from_args(args, config.trunk)
    if trunk is not config.trunk:
        changes["trunk"] = trunk
    if args.rtp_ports:
        try:
            low, high = (int(p) for p in args.rtp_ports.split("-", 1))
        except ValueError:
            raise cfg.ConfigError("--rtp-ports wants MIN-MAX, e.g. 20000-30000") from None
        changes["rtp_port_min"], changes["rtp_port_max"] = low, high
    if args.ice_address:
        changes["ice_addresses"] = tuple(args.ice_address)
    config = replace(config, **changes)  # type: ignore[arg-type]
    cfg.validate(config)
    workers.check(config)
    return config


def _trunk_from_args(args: argparse.Namespace, file_trunk: cfg.Trunk | None) -> cfg.Trunk | None:
    """--trunk replaces the file's URI; credentials and From settings not given are kept."""
    if not (args.trunk or args.trunk_user or args.trunk_password):
        return file_trunk
    if not args.trunk and file_trunk is None:
        raise cfg.ConfigError("--trunk-user/--trunk-password need --trunk (or [trunk] in the file)")
    username, password, realm = _trunk_credentials(args, file_trunk)
    from_user, from_domain = _trunk_from_fields(file_trunk)
    return cfg.parse_trunk(
        args.trunk or str(file_trunk.uri if file_trunk else ""),
        username=username,
        password=password,
        realm=realm,
        from_user=from_user,
        from_domain=from_domain,
    )


def _trunk_credentials(
    args: argparse.Namespace, file_trunk: cfg.Trunk | None
) -> tuple[str | None, str | None, str | None]:
    """Username, password and realm: the options' if given, else the file's."""
    old = file_trunk.credentials if file_trunk else None
    username = args.trunk_user or (old.username if old else None)
    password = args.trunk_password or (old.password if old else None)
    if args.trunk_password and not username:
        raise cfg.ConfigError("--trunk-password needs --trunk-user")
    return username, password, old.realm if old else None


def _trunk_from_fields(file_trunk: cfg.Trunk | None) -> tuple[str | None, str | None]:
    """The file's From user and domain; its default From user is not carried over."""
    if file_trunk is None:
        return None, None
    from_user = file_trunk.from_user if file_trunk.from_user != "sipgw" else None
    return from_user, file_trunk.from_domain


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("hash-password", "token"):
        return signin_cli.main(args)
    runtime.configure_logging(args.verbose)
    try:
        config = config_from_args(args)
    except cfg.ConfigError as exc:
        print(f"sipgw: configuration error: {exc}", file=sys.stderr)
        return 2
    if config.workers == 1:
        return runtime.run_serve(config)

    def announce(ready: list[workers.Ready]) -> None:
        where = runtime.describe(config, [r.sip_port for r in ready])
        print(f"sipgw ready: open {runtime.url(config)}  ({where})", flush=True)

    return workers.supervise(config, args.verbose, announce)


if __name__ == "__main__":
    sys.exit(main())
