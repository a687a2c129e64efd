"""`hello`'s check: a password (plain or argon2 hash) or a signed token, behind a lockout.

Every refusal looks the same to the page (`auth-failed` after `failure_delay`), whether the
user is unknown, the password wrong, the token expired or the user or address locked out:
an attacker learns nothing from the answer, and the right password is refused too while
locked. Each refusal is a security event (auth-failed), each lockout another (lockout).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable

from gateway.config import User
from gateway.security import SecurityEvent, SecurityEvents
from gateway.signin import passwords, tokens
from gateway.signin.lockout import Lockout
from gateway.signin.settings import SignInSettings

log = logging.getLogger(__name__)


class Authenticator:
    def __init__(
        self,
        settings: SignInSettings,
        users: tuple[User, ...],
        security: SecurityEvents,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.users = {u.name: u for u in users}
        self.security = security
        self.lockout = Lockout(
            failures=settings.lockout_failures,
            window=settings.lockout_window,
            base=settings.lockout_time,
            maximum=settings.lockout_max_time,
            clock=clock,
        )
        # Argon2 checks run in the default executor's threads; at most this many at once,
        # so a flood of hellos queues here instead of taking every thread and core.
        self._hash_checks = asyncio.Semaphore(settings.max_hash_checks)
        self._any_hash = any(u.password_hash for u in users)

    @property
    def open(self) -> bool:
        """No users and no token secret: anyone who says hello (the demo, click-to-call)."""
        return not self.users and self.settings.token_secret is None

    def plain_text_users(self) -> list[str]:
        return [u.name for u in self.users.values() if u.password is not None]

    async def sign_in(self, name: str | None, token: str | None, src: str) -> User | None:
        if self.open:
            return User(name=name or f"guest-{secrets.token_hex(3)}")
        if name is None and token is None:
            # A page opening without stored credentials asks to see the sign-in form: not a
            # guess, so not counted (page reloads must not lock a whole office out).
            return None
        is_jwt, target = self._claimed(name, token)
        user_key = f"user:{target or '-'}"
        addr_key = f"addr:{src}"
        if self.lockout.locked(user_key) or self.lockout.locked(addr_key):
            await self._refuse(target, src, "locked out", count=False)
            return None
        if is_jwt:
            user, reason = self._check_token(name, token or "")
        else:
            user, reason = await self._check_password(name, token)
        if user is None:
            await self._refuse(target, src, reason, count=True)
            return None
        self.lockout.succeed(user_key)
        return user

    def _claimed(self, name: str | None, token: str | None) -> tuple[bool, str | None]:
        """Whether `token` is a JWT to verify, and the user the attempt is for: the name
        given, else the token's (not yet verified) subject, for the lockout and the log."""
        is_jwt = bool(token and self.settings.token_secret and tokens.looks_like_jwt(token))
        target = name if name is not None or not is_jwt else tokens.unverified_subject(token or "")
        return is_jwt, target

    def _check_token(self, name: str | None, token: str) -> tuple[User | None, str]:
        s = self.settings
        assert s.token_secret is not None
        sub = tokens.verify(token, s.token_secret, audience=s.token_audience, issuer=s.token_issuer)
        if sub is None:
            return None, "bad token"
        if name is not None and name != sub:
            return None, "token for another user"
        if not self.users:
            return User(name=sub), ""  # token-only sign-in: the application vouches for sub
        user = self.users.get(sub)
        return (user, "") if user is not None else (None, "token for an unknown user")

    async def _check_password(self, name: str | None, given: str | None) -> tuple[User | None, str]:
        user = self.users.get(name or "")
        if user is None:
            if self._any_hash:
                await self._verify_hash(passwords.dummy_hash(), given or "")
            return None, "unknown user"
        if user.password_hash is not None:
            ok = await self._verify_hash(user.password_hash, given or "")
        elif user.password is not None:
            ok = passwords.verify_plain(user.password, given or "")
        else:
            ok = True  # a user configured without a password: the name alone signs in
        return (user, "") if ok else (None, "bad password")

    async def _verify_hash(self, encoded: str, given: str) -> bool:
        loop = asyncio.get_running_loop()
        async with self._hash_checks:
            return await loop.run_in_executor(None, passwords.verify_hash, encoded, given)

    async def _refuse(self, user: str | None, src: str, reason: str, *, count: bool) -> None:
        self.security.record(SecurityEvent.AUTH_FAILED, src, user=user or "-", detail=reason)
        if count:
            for key, what in ((f"user:{user or '-'}", "user"), (f"addr:{src}", "address")):
                length = self.lockout.fail(key)
                if length is not None:
                    self.security.record(
                        SecurityEvent.LOCKOUT,
                        src,
                        user=user or "-",
                        detail=f"{what} locked for {length:.0f} s",
                    )
        if self.settings.failure_delay:
            await asyncio.sleep(self.settings.failure_delay)
