"""`sipgw hash-password` and `sipgw token`: the sign-in helpers of the command line."""

from __future__ import annotations

import argparse
import getpass
import sys

from gateway import config as cfg
from gateway.signin import passwords, tokens


def _read_password() -> str | None:
    if not sys.stdin.isatty():
        # Piped: the whole input, less one trailing newline (echo adds one).
        text = sys.stdin.read()
        return text[:-1] if text.endswith("\n") else text
    first = getpass.getpass("Password: ")
    if getpass.getpass("Again: ") != first:
        print("sipgw: the passwords differ", file=sys.stderr)
        return None
    return first


def hash_password() -> int:
    password = _read_password()
    if password is None:
        return 1
    if not password:
        print("sipgw: an empty password", file=sys.stderr)
        return 1
    print(passwords.hash_password(password))
    return 0


def token(args: argparse.Namespace) -> int:
    try:
        config = cfg.from_toml(args.config) if args.config else cfg.Config()
    except cfg.ConfigError as exc:
        print(f"sipgw: configuration error: {exc}", file=sys.stderr)
        return 2
    settings = config.signin
    if settings.token_secret is None:
        print("sipgw: [auth] token_secret is not set (give --config)", file=sys.stderr)
        return 2
    if args.ttl <= 0:
        print("sipgw: --ttl must be positive", file=sys.stderr)
        return 2
    if config.users and config.user(args.user) is None:
        print(f"sipgw: no user {args.user!r} in [[users]]", file=sys.stderr)
        return 2
    print(
        tokens.mint(
            settings.token_secret,
            args.user,
            args.ttl,
            audience=settings.token_audience,
            issuer=settings.token_issuer,
        )
    )
    return 0


def main(args: argparse.Namespace) -> int:
    if args.command == "hash-password":
        return hash_password()
    return token(args)
