"""A small digest verifier (RFC 2617/7616) for the embedded demo endpoint and for tests.

Pure code: no I/O, no clock except the injectable one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
import secrets
import struct
import time
from collections.abc import Callable, Mapping

import sipmessage

from gateway.sip.digest import (
    AuthError,
    UnsupportedChallenge,
    compute_response,
    parse_auth_header,
    quote,
    split_algorithm,
)

logger = logging.getLogger(__name__)


_NONCE_RAW = struct.Struct(">Q8s")  # milliseconds since the epoch, 8 random bytes
_MAC_LEN = 16


class DigestServer:
    """A small verifier: stateless HMAC-signed timestamp nonces, qop="auth"."""

    def __init__(
        self,
        realm: str,
        users: Mapping[str, str],
        algorithm: str = "MD5",
        *,
        nonce_max_age: float = 300.0,
        secret: bytes | None = None,
        clock: Callable[[], float] = time.time,
        check_uri: bool = True,
    ) -> None:
        split_algorithm(algorithm)  # raises UnsupportedChallenge early
        if algorithm.upper().endswith("-SESS"):
            # Fine for the math, but nothing needs it and it doubles the test matrix.
            raise UnsupportedChallenge("DigestServer does not offer -sess algorithms", algorithm)
        self.realm = realm
        self.algorithm = algorithm
        self._users = dict(users)
        self._max_age = nonce_max_age
        self._secret = secret if secret is not None else secrets.token_bytes(32)
        self._clock = clock
        self._check_uri = check_uri

    def challenge(self, *, stale: bool = False) -> str:
        """A WWW-Authenticate (or Proxy-Authenticate) value with a fresh nonce."""
        parts = [
            f"realm={quote(self.realm)}",
            f"nonce={quote(self._new_nonce())}",
            f"algorithm={self.algorithm}",
            'qop="auth"',
        ]
        if stale:
            parts.append("stale=true")
        return "Digest " + ", ".join(parts)

    def verify(self, request: sipmessage.Request, header: str = "Authorization") -> str | None:
        """The authenticated username, or None (never raises on bad input)."""
        username, fresh = self._check(request, header)
        return username if fresh else None

    def is_stale(self, request: sipmessage.Request, header: str = "Authorization") -> bool:
        """True if the credentials are right but the nonce has expired: answer stale=true."""
        username, fresh = self._check(request, header)
        return username is not None and not fresh

    def _new_nonce(self) -> str:
        raw = _NONCE_RAW.pack(int(self._clock() * 1000), secrets.token_bytes(8))
        return base64.urlsafe_b64encode(raw + self._mac(raw)).rstrip(b"=").decode("ascii")

    def _mac(self, raw: bytes) -> bytes:
        msg = raw + self.realm.encode("utf-8")
        return hmac.new(self._secret, msg, hashlib.sha256).digest()[:_MAC_LEN]

    def _nonce_fresh(self, nonce: str) -> bool | None:
        """None if forged or garbled, else whether it is still within its max age."""
        try:
            blob = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(blob) != _NONCE_RAW.size + _MAC_LEN:
            return None
        raw, mac = blob[: _NONCE_RAW.size], blob[_NONCE_RAW.size :]
        if not hmac.compare_digest(mac, self._mac(raw)):
            return None
        issued_ms: int = _NONCE_RAW.unpack(raw)[0]
        age = self._clock() - issued_ms / 1000
        # A little slack for a clock that steps back; more means the nonce is not ours.
        return -1.0 <= age <= self._max_age

    def _check(self, request: sipmessage.Request, header: str) -> tuple[str | None, bool]:
        for value in request.headers.getlist(header):
            try:
                parsed = parse_auth_header(value)
            except AuthError:
                continue
            for creds in parsed:
                p = creds.parameters
                if creds.scheme.lower() != "digest" or p.get("realm") != self.realm:
                    continue
                return self._check_one(request, p)
        return None, False

    def _check_one(
        self, request: sipmessage.Request, p: sipmessage.AuthParameters
    ) -> tuple[str | None, bool]:
        username = p.get("username")
        nonce = p.get("nonce")
        uri = p.get("uri")
        given = p.get("response")
        if username is None or nonce is None or uri is None or given is None:
            return None, False
        password = self._users.get(username)
        if password is None or not self._acceptable(request, p, uri):
            return None, False
        fresh = self._nonce_fresh(nonce)
        if fresh is None:
            return None, False
        try:
            expected = compute_response(
                algorithm=self.algorithm,
                username=username,
                realm=self.realm,
                password=password,
                method=request.method,
                uri=uri,
                nonce=nonce,
                qop="auth",
                nc=p.get("nc", ""),
                cnonce=p.get("cnonce"),
                body=request.body,
            )
        except AuthError:
            return None, False
        if not hmac.compare_digest(expected, given.lower()):
            return None, False
        return username, fresh

    def _acceptable(
        self, request: sipmessage.Request, p: sipmessage.AuthParameters, uri: str
    ) -> bool:
        """Our algorithm, qop=auth, a well-formed nonce count and (if checked) this
        request's URI: anything else is refused before any hash is computed."""
        if p.get("algorithm", "MD5").upper() != self.algorithm.upper():
            return False
        if (p.get("qop") or "").lower() != "auth":
            return False
        nc = p.get("nc", "")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            return False
        return not (self._check_uri and uri != str(request.uri))
