"""SIP digest (RFC 2617, RFC 7616, RFC 8760): hash algorithms, the response computation and
the challenge parser shared by the client (gateway/sip/auth.py) and the verifier
(gateway/sip/digest_server.py).

Challenges are parsed here rather than with `sipmessage.AuthChallenge.parse`, because
sipmessage 0.7 splits parameters on every comma, so the very common
``qop="auth,auth-int"`` (and any quoted value holding a comma) fails to parse. The parsed
result is still expressed as `sipmessage.AuthChallenge` values.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import sipmessage


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
STRENGTH = {"MD5": 0, "SHA-256": 1, "SHA-512-256": 2}


def split_algorithm(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
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
    hash_fn, sess = split_algorithm(algorithm)

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


def quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Digest:
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
        return STRENGTH[base]


def digest_from(raw: str, challenge: sipmessage.AuthChallenge) -> Digest:
    if challenge.scheme.lower() != "digest":
        raise UnsupportedChallenge(f"unsupported authentication scheme {challenge.scheme!r}", raw)
    p = challenge.parameters
    if "realm" not in p or "nonce" not in p:
        raise AuthError(f"digest challenge without realm or nonce: {raw!r}")
    algorithm = p.get("algorithm")
    try:
        _, sess = split_algorithm(algorithm or "MD5")
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
    return Digest(
        raw=raw,
        realm=p["realm"],
        nonce=p["nonce"],
        algorithm=algorithm,
        opaque=p.get("opaque"),
        qop=qop,
    )


def realm_of(value: str) -> str | None:
    try:
        parsed = parse_auth_header(value)
    except AuthError:
        return None
    return parsed[0].parameters.get("realm") if len(parsed) == 1 else None
