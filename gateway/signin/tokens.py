"""Signed, expiring sign-in tokens: JWT (RFC 7519) with HS256 through PyJWT.

A contact centre's web application, which has signed its agent in already, mints a token
with the shared secret and hands it to the agent's page; the gateway never sees the
agent's password. `sub` is the user name, `exp` is required.
"""

from __future__ import annotations

import time

import jwt

ALGORITHM = "HS256"
# No sign-in token needs more; a larger one is refused before any decoding.
MAX_TOKEN_LENGTH = 4096


def looks_like_jwt(token: str) -> bool:
    """Three base64url parts whose header is a JSON object ("eyJ" is base64 of '{"')."""
    return token.startswith("eyJ") and token.count(".") == 2


def unverified_subject(token: str) -> str | None:
    """The name a token claims, to count its failures against (never to sign in with)."""
    try:
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    sub = claims.get("sub") if isinstance(claims, dict) else None
    return sub if isinstance(sub, str) and len(sub) <= 128 else None


def verify(
    token: str, secret: str, *, audience: str | None = None, issuer: str | None = None
) -> str | None:
    """The token's user (`sub`) if it is signed with the secret, not expired and (when
    configured) for this audience and issuer; None otherwise."""
    if len(token) > MAX_TOKEN_LENGTH:
        return None
    try:
        claims = jwt.decode(
            token,
            secret,
            algorithms=[ALGORITHM],  # never "none", never a key-confusion algorithm
            audience=audience,
            issuer=issuer,
            options={"require": ["exp", "sub"], "verify_aud": audience is not None},
            leeway=5,
        )
    except (jwt.PyJWTError, ValueError, TypeError):
        return None
    sub = claims.get("sub")
    return sub if isinstance(sub, str) and sub else None


def mint(
    secret: str,
    user: str,
    ttl: int,
    *,
    audience: str | None = None,
    issuer: str | None = None,
    now: float | None = None,
) -> str:
    issued = int(time.time() if now is None else now)
    claims: dict[str, object] = {"sub": user, "iat": issued, "exp": issued + ttl}
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    return jwt.encode(claims, secret, algorithm=ALGORITHM)
