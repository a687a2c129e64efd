"""SIP digest authentication (RFC 3261 section 22, RFC 2617, RFC 7616, RFC 8760).

`DigestClient` answers a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) challenge by
returning a copy of the challenged request carrying Authorization or Proxy-Authorization.
`DigestServer` is a small verifier for the embedded demo endpoint and for tests.

Pure code: no I/O, no clocks except the injectable one of `DigestServer`.

Challenges are parsed here rather than with `sipmessage.AuthChallenge.parse`, because
sipmessage 0.7 splits parameters on every comma, so the very common
``qop="auth,auth-int"`` (and any quoted value holding a comma) fails to parse. The parsed
result is still expressed as `sipmessage.AuthChallenge` values.
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
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import sipmessage

from gateway.sip import message as sipmsg

logger = logging.getLogger(__name__)

__all__ = [
    "AuthError",
    "Credentials",
    "DigestClient",
    "DigestServer",
    "RealmMismatch",
    "UnsupportedChallenge",
    "compute_response",
    "parse_auth_header",
]


@dataclass(frozen=True)
class Credentials:
    """A SIP account. If `realm` is set, only challenges for that realm are answered."""

    username: str
    password: str
    realm: str | None = None

    # Written out so that logging a Credentials never prints the password.
    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password='***', realm={self.realm!r})"


class AuthError(Exception):
    """A challenge or credentials header that cannot be answered or checked."""


class UnsupportedChallenge(AuthError):
    """The challenge uses a scheme, algorithm or qop this module does not implement."""

    def __init__(self, message: str, challenge: str) -> None:
        super().__init__(message)
        self.challenge = challenge
        "The offending header value, as received."


class RealmMismatch(AuthError):
    """No challenge is for the realm the credentials are restricted to."""

    def __init__(self, message: str, realms: tuple[str, ...]) -> None:
        super().__init__(message)
        self.realms = realms
        "The realms the peer offered."


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


_HASHES: dict[str, Callable[[bytes], str]] = {"MD5": _md5, "SHA-256": _sha256}
try:
    # Only present when Python's OpenSSL provides it (it does on Debian 12).
    hashlib.new("sha512_256")
    _HASHES["SHA-512-256"] = _sha512_256
except ValueError:  # pragma: no cover - depends on the OpenSSL build
    pass

# RFC 8760 section 2.4 lets local policy override the peer's order: stronger hash first.
_STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}


def _split_algorithm(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
    name = algorithm.strip().upper()
    sess = name.endswith("-SESS")
    base = name[: -len("-SESS")] if sess else name
    hash_fn = _HASHES.get(base)
    if hash_fn is None:
        raise UnsupportedChallenge(f"unsupported digest algorithm {algorithm!r}", algorithm)
    return hash_fn, sess


def compute_response(
    *,
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    qop: str | None,
    nc: str | None,
    cnonce: str | None,
    body: bytes = b"",
) -> str:
    """The digest `response` value (lower-case hex), RFC 2617 section 3.2.2.1 / RFC 7616.

    `qop` None is the RFC 2069 form. `body` is only hashed for qop "auth-int".
    """
    hash_fn, sess = _split_algorithm(algorithm)

    def h(text: str) -> str:
        return hash_fn(text.encode("utf-8"))

    qop_l = qop.lower() if qop is not None else None
    if qop_l not in (None, "auth", "auth-int"):
        raise UnsupportedChallenge(f"unsupported qop {qop!r}", qop or "")
    if qop_l is not None and (not nc or not cnonce):
        raise AuthError("qop requires nc and cnonce")
    if sess and not cnonce:
        raise AuthError(f"{algorithm} requires a cnonce")

    ha1 = h(f"{username}:{realm}:{password}")
    if sess:
        ha1 = h(f"{ha1}:{nonce}:{cnonce}")
    a2 = f"{method}:{uri}"
    if qop_l == "auth-int":
        a2 += ":" + hash_fn(body)
    ha2 = h(a2)
    if qop_l is None:
        return h(f"{ha1}:{nonce}:{ha2}")
    return h(f"{ha1}:{nonce}:{nc}:{cnonce}:{qop_l}:{ha2}")


# --- header parsing -----------------------------------------------------------------------

_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_WS = " \t\r\n"


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> int:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _WS:
            self.pos += 1
        return self.pos - start

    def token(self) -> str:
        start = self.pos
        while self.pos < len(self.text) and self.text[self.pos] in _TOKEN_CHARS:
            self.pos += 1
        if self.pos == start:
            raise AuthError(f"expected a token at offset {start} in {self.text!r}")
        return self.text[start : self.pos]

    def value(self) -> str:
        text = self._value()
        # We echo realm, nonce and opaque into our next request: no control characters.
        if any(ord(c) < 0x20 or ord(c) == 0x7F for c in text):
            raise AuthError(f"control character in parameter value in {self.text!r}")
        return text

    def _value(self) -> str:
        if self.peek() != '"':
            # Be lenient with unquoted values (some servers send unquoted base64 nonces).
            start = self.pos
            while self.pos < len(self.text) and self.text[self.pos] not in _WS + ',"':
                self.pos += 1
            if self.pos == start:
                raise AuthError(f"expected a value at offset {start} in {self.text!r}")
            return self.text[start : self.pos]
        self.pos += 1
        out: list[str] = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            if c == "\\" and self.pos + 1 < len(self.text):
                out.append(self.text[self.pos + 1])
                self.pos += 2
            elif c == '"':
                self.pos += 1
                return "".join(out)
            else:
                out.append(c)
                self.pos += 1
        raise AuthError(f"unterminated quoted string in {self.text!r}")

    def starts_param(self) -> bool:
        """True if a `name =` follows (an auth-param), False if a new scheme starts."""
        save = self.pos
        try:
            self.token()
        except AuthError:
            return False
        finally:
            end = self.pos
            self.pos = save
        rest = self.text[end:].lstrip(_WS)
        return rest.startswith("=")


def parse_auth_header(value: str) -> list[sipmessage.AuthChallenge]:
    """Parse a WWW-/Proxy-Authenticate or (Proxy-)Authorization value.

    Accepts several comma-separated challenges in one value (HTTP style) and quoted values
    holding commas. Parameter names are lower-cased. Raises `AuthError` if malformed.
    """
    s = _Scanner(value)
    result: list[sipmessage.AuthChallenge] = []
    s.skip_ws()
    while not s.at_end():
        scheme = s.token()
        if not s.skip_ws():
            raise AuthError(f"expected parameters after scheme {scheme!r} in {value!r}")
        params: dict[str, str] = {}
        while True:
            name = s.token().lower()
            s.skip_ws()
            if s.peek() != "=":
                raise AuthError(f"expected '=' after {name!r} in {value!r}")
            s.pos += 1
            s.skip_ws()
            if name in params:
                raise AuthError(f"duplicate parameter {name!r} in {value!r}")
            params[name] = s.value()
            s.skip_ws()
            if s.at_end():
                break
            if s.peek() != ",":
                raise AuthError(f"expected ',' at offset {s.pos} in {value!r}")
            while s.peek() == ",":
                s.pos += 1
                s.skip_ws()
            if s.at_end() or not s.starts_param():
                break
        result.append(sipmessage.AuthChallenge(scheme, sipmessage.AuthParameters(**params)))
    if not result:
        raise AuthError("empty authentication header")
    return result


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class _Digest:
    """One Digest challenge, checked and reduced to what an answer needs."""

    raw: str
    realm: str
    nonce: str
    algorithm: str | None  # as the peer spelled it; None when absent (means MD5)
    opaque: str | None
    qop: str | None  # the qop we will answer with

    @property
    def strength(self) -> int:
        base = (self.algorithm or "MD5").upper().removesuffix("-SESS")
        return _STRENGTH[base]


def _digest_from(raw: str, challenge: sipmessage.AuthChallenge) -> _Digest:
    if challenge.scheme.lower() != "digest":
        raise UnsupportedChallenge(f"unsupported authentication scheme {challenge.scheme!r}", raw)
    p = challenge.parameters
    if "realm" not in p or "nonce" not in p:
        raise AuthError(f"digest challenge without realm or nonce: {raw!r}")
    algorithm = p.get("algorithm")
    try:
        _, sess = _split_algorithm(algorithm or "MD5")
    except UnsupportedChallenge as exc:
        raise UnsupportedChallenge(str(exc), raw) from None
    qop: str | None = None
    if "qop" in p:
        offered = {q.strip().lower() for q in p["qop"].split(",") if q.strip()}
        if "auth" in offered:
            qop = "auth"
        elif "auth-int" in offered:
            qop = "auth-int"
        else:
            raise UnsupportedChallenge(f"unsupported qop {p['qop']!r}", raw)
    elif sess:
        # RFC 2617 leaves -sess without qop ill-defined (cnonce is then forbidden).
        raise UnsupportedChallenge(f"{algorithm} without qop", raw)
    return _Digest(
        raw=raw,
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=algorithm,
        opaque=p.get("opaque"),
        qop=qop,
    )


def _realm_of(value: str) -> str | None:
    try:
        parsed = parse_auth_header(value)
    except AuthError:
        return None
    return parsed[0].parameters.get("realm") if len(parsed) == 1 else None


# Bound on remembered nonces: a long-lived UA sees a new nonce on every expiry.
_MAX_NONCES = 64


class DigestClient:
    """Keeps nonce-count per nonce and a fresh cnonce, so that a later request reusing the
    same challenge increments nc."""

    def __init__(self, credentials: Credentials) -> None:
        self._credentials = credentials
        self._nonce_counts: OrderedDict[tuple[str, str], int] = OrderedDict()

    def authorize(
        self, request: sipmessage.Request, response: sipmessage.Response
    ) -> sipmessage.Request:
        """A copy of `request` carrying credentials for the challenge in `response`.

        CSeq and Via are left alone: bumping them is the caller's business. A credentials
        header of the same realm already on `request` (from an earlier attempt) is replaced;
        those of other realms are kept (RFC 3261 section 22.3).
        """
        if response.code == 401:
            challenge_header, answer_header = "WWW-Authenticate", "Authorization"
        elif response.code == 407:
            challenge_header, answer_header = "Proxy-Authenticate", "Proxy-Authorization"
        else:
            raise AuthError(f"response {response.code} is not a 401 or 407 challenge")

        chosen = self._choose(response.headers.getlist(challenge_header), challenge_header)
        value = self._answer(chosen, request)

        authorized = sipmsg.copy_request(request)
        kept = [
            v for v in authorized.headers.getlist(answer_header) if _realm_of(v) != chosen.realm
        ]
        authorized.headers.setlist(answer_header, [*kept, value])
        return authorized

    def _choose(self, values: list[str], header: str) -> _Digest:
        if not values:
            raise AuthError(f"challenge has no {header} header")
        usable: list[_Digest] = []
        unsupported: list[UnsupportedChallenge] = []
        malformed: list[AuthError] = []
        wanted = self._credentials.realm
        offered_realms: list[str] = []
        for raw in values:
            try:
                parsed = parse_auth_header(raw)
            except AuthError as exc:
                malformed.append(exc)
                continue
            for challenge in parsed:
                try:
                    digest = _digest_from(raw, challenge)
                except UnsupportedChallenge as exc:
                    unsupported.append(exc)
                    continue
                except AuthError as exc:
                    malformed.append(exc)
                    continue
                offered_realms.append(digest.realm)
                if wanted is None or digest.realm == wanted:
                    usable.append(digest)
        if usable:
            # max() keeps the first of equals: the peer's order breaks ties.
            best = max(usable, key=lambda d: d.strength)
            logger.debug(
                "answering %s challenge realm=%r algorithm=%s qop=%s (%d offered)",
                header,
                best.realm,
                best.algorithm or "MD5",
                best.qop,
                len(values),
            )
            return best
        if offered_realms:
            raise RealmMismatch(
                f"no {header} challenge for realm {wanted!r}; offered {offered_realms!r}",
                tuple(offered_realms),
            )
        if unsupported:
            if len(unsupported) == 1:
                raise unsupported[0]
            texts = "; ".join(e.challenge for e in unsupported)
            raise UnsupportedChallenge(f"no supported {header} challenge: {texts}", texts)
        raise AuthError(f"malformed {header}: {malformed[0]}")

    def _answer(self, digest: _Digest, request: sipmessage.Request) -> str:
        uri = str(request.uri)
        nc: str | None = None
        cnonce: str | None = None  # both stay None in the RFC 2069 (no qop) form
        if digest.qop is not None:
            cnonce = secrets.token_hex(16)
            key = (digest.realm, digest.nonce)
            count = self._nonce_counts.pop(key, 0) + 1
            self._nonce_counts[key] = count  # re-inserted last: the oldest nonce goes first
            while len(self._nonce_counts) > _MAX_NONCES:
                self._nonce_counts.popitem(last=False)
            nc = f"{count:08x}"
        response = compute_response(
            algorithm=digest.algorithm or "MD5",
            username=self._credentials.username,
            realm=digest.realm,
            password=self._credentials.password,
            method=request.method,
            uri=uri,
            nonce=digest.nonce,
            qop=digest.qop,
            nc=nc,
            cnonce=cnonce,
            body=request.body,
        )
        parts = [
            f"username={_quote(self._credentials.username)}",
            f"realm={_quote(digest.realm)}",
            f"nonce={_quote(digest.nonce)}",
            f"uri={_quote(uri)}",
            f"response={_quote(response)}",
        ]
        if digest.algorithm is not None:
            parts.append(f"algorithm={digest.algorithm}")
        if digest.qop is not None:
            # qop and nc are unquoted tokens (RFC 2617 message-qop, nonce-count).
            parts += [f"cnonce={_quote(cnonce or '')}", f"qop={digest.qop}", f"nc={nc}"]
        if digest.opaque is not None:
            parts.append(f"opaque={_quote(digest.opaque)}")
        return "Digest " + ", ".join(parts)


# --- server side ----------------------------------------------------------------------------

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
        _split_algorithm(algorithm)  # raises UnsupportedChallenge early
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
            f"realm={_quote(self.realm)}",
            f"nonce={_quote(self._new_nonce())}",
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
        if password is None:
            return None, False
        if p.get("algorithm", "MD5").upper() != self.algorithm.upper():
            return None, False
        if (p.get("qop") or "").lower() != "auth":
            return None, False
        nc = p.get("nc", "")
        if len(nc) != 8 or any(c not in "0123456789abcdefABCDEF" for c in nc):
            return None, False
        if self._check_uri and uri != str(request.uri):
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
                nc=nc,
                cnonce=p.get("cnonce"),
                body=request.body,
            )
        except AuthError:
            return None, False
        if not hmac.compare_digest(expected, given.lower()):
            return None, False
        return username, fresh
