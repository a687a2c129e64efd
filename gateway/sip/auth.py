"""SIP digest authentication (RFC 3261 section 22, RFC 2617, RFC 7616, RFC 8760).

`DigestClient` answers a 401 (WWW-Authenticate) or 407 (Proxy-Authenticate) challenge by
returning a copy of the challenged request carrying Authorization or Proxy-Authorization.
`DigestServer` (gateway/sip/digest_server.py), the verifier, is re-exported from here.

Pure code: no I/O, no clocks except the injectable one of `DigestServer`.
The hash algorithms and the challenge parser are in gateway/sip/digest.py.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict

import sipmessage

from gateway.sip import message as sipmsg
from gateway.sip.digest import (
    AuthError,
    Digest,
    RealmMismatch,
    UnsupportedChallenge,
    compute_response,
    digest_from,
    parse_auth_header,
    quote,
    realm_of,
)
from gateway.sip.digest_server import DigestServer
from gateway.sip.values import Credentials

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
        kept = [v for v in authorized.headers.getlist(answer_header) if realm_of(v) != chosen.realm]
        authorized.headers.setlist(answer_header, [*kept, value])
        return authorized

    def _choose(self, values: list[str], header: str) -> Digest:
        if not values:
            raise AuthError(f"challenge has no {header} header")
        offered, unsupported, malformed = _digests_in(values)
        wanted = self._credentials.realm
        usable = [d for d in offered if wanted is None or d.realm == wanted]
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
        if offered:
            offered_realms = [d.realm for d in offered]
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

    def _answer(self, digest: Digest, request: sipmessage.Request) -> str:
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
            f"username={quote(self._credentials.username)}",
            f"realm={quote(digest.realm)}",
            f"nonce={quote(digest.nonce)}",
            f"uri={quote(uri)}",
            f"response={quote(response)}",
        ]
        if digest.algorithm is not None:
            parts.append(f"algorithm={digest.algorithm}")
        if digest.qop is not None:
            # qop and nc are unquoted tokens (RFC 2617 message-qop, nonce-count).
            parts += [f"cnonce={quote(cnonce or '')}", f"qop={digest.qop}", f"nc={nc}"]
        if digest.opaque is not None:
            parts.append(f"opaque={quote(digest.opaque)}")
        return "Digest " + ", ".join(parts)


def _digests_in(
    values: list[str],
) -> tuple[list[Digest], list[UnsupportedChallenge], list[AuthError]]:
    """Every Digest challenge in the header values, in the peer's order, and the errors of
    those that are of a scheme or algorithm we do not support or that do not parse."""
    digests: list[Digest] = []
    unsupported: list[UnsupportedChallenge] = []
    malformed: list[AuthError] = []
    for raw in values:
        try:
            parsed = parse_auth_header(raw)
        except AuthError as exc:
            malformed.append(exc)
            continue
        for challenge in parsed:
            try:
                digests.append(digest_from(raw, challenge))
            except UnsupportedChallenge as exc:
                unsupported.append(exc)
            except AuthError as exc:
                malformed.append(exc)
    return digests, unsupported, malformed
