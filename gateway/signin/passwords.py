"""Password hashes (argon2id, OWASP's first choice) and plain-text passwords."""

from __future__ import annotations

import functools
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# argon2-cffi's defaults (RFC 9106's second recommended setting: t=3, 64 MiB, p=4).
_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """An encoded argon2id hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash)."""
    return _HASHER.hash(password)


def is_hash(text: str) -> bool:
    try:
        _HASHER.check_needs_rehash(text)  # parses the parameters; cheap
    except (InvalidHashError, ValueError):
        return False
    return text.startswith("$argon2")


def verify_hash(encoded: str, password: str) -> bool:
    """Slow on purpose (~50 ms of CPU): call it in a thread, never on the event loop."""
    try:
        return _HASHER.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@functools.cache
def dummy_hash() -> str:
    """Checked when the user is unknown, so a refusal takes as long whether or not the
    name exists."""
    return _HASHER.hash("sipgw: no such user")


def verify_plain(expected: str, given: str) -> bool:
    return hmac.compare_digest(expected.encode(), given.encode())
