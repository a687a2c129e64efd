"""SIP registration (RFC 3261 section 10): keep one Contact bound to an address of record.

A `Registration` is a transaction user beside the INVITE sessions of `ua.py`: it sends
REGISTER through the UA's transaction layer, answers digest challenges, follows 423 with
Min-Expires, refreshes before the binding runs out, retries failures with jittered
exponential back-off for as long as it runs, and removes the binding on `stop()`.

States:

    UNREGISTERED -> REGISTERING -> REGISTERED  (refreshes keep REGISTERED)
                               \\-> FAILED -> REGISTERING -> ...  (back-off between tries)
    REGISTERED/FAILED -> UNREGISTERING -> UNREGISTERED  (stop())
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sipmessage import URI, Address, Request, Response
from sipmessage.parameters import Parameters

from gateway.sip import message as sipmsg
from gateway.sip.auth import AuthError, Credentials, DigestClient
from gateway.sip.transaction import TransactionTimeout
from gateway.sip.transport import Peer
from gateway.sip.ua import UserAgent

log = logging.getLogger(__name__)

# Answered challenges in a row before giving up: one for the first challenge, one more for a
# stale nonce or a nonce that changed in between. A third means the credentials are wrong.
MAX_CHALLENGES = 2
# 423 answers in a row followed; a registrar that keeps raising Min-Expires is broken.
MAX_INTERVAL_RETRIES = 2
# How long stop() waits for the un-REGISTER's final response.
UNREGISTER_WAIT = 4.0
# Enough history to see what happened lately; a registration retried for days stays small.
MAX_HISTORY = 100
# Back-off jitter: each wait is drawn from [base, base * JITTER], so that many gateways
# that lost the same registrar do not come back in step.
JITTER = 1.25


class RegistrationState(StrEnum):
    UNREGISTERED = "unregistered"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"
    UNREGISTERING = "unregistering"


@dataclass(frozen=True)
class RegistrationStatus:
    """What a status page or /healthz shows about one registration."""

    state: RegistrationState
    reason: str | None = None
    code: int | None = None
    # Seconds granted by the registrar (REGISTERED), else None.
    expires: int | None = None
    contact: str | None = None


@dataclass(frozen=True)
class _Outcome:
    """How one REGISTER exchange (with its challenges and 423s) ended."""

    code: int
    reason: str
    response: Response | None = None
    expires: int | None = None  # granted, for a 2xx

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300 and self.expires is not None


class Registration:
    """Registers `contact_user` at our address with `registrar` for `aor`, until stopped."""

    def __init__(
        self,
        ua: UserAgent,
        *,
        registrar: URI,
        peer: Peer,
        aor: Address,
        credentials: Credentials | None,
        expires: int = 600,
        contact_user: str,
        on_change: Callable[[RegistrationStatus], None] | None = None,
        retry_min: float = 2.0,
        retry_max: float = 300.0,
    ) -> None:
        if expires <= 0:
            raise ValueError("expires must be positive")
        if not 0 < retry_min <= retry_max:
            raise ValueError("need 0 < retry_min <= retry_max")
        self.ua = ua
        self.registrar = registrar
        self.peer = peer
        # Section 10.2: To is the address of record without a tag; From is the same (we
        # register ourselves, no third party) with a tag of our own.
        self.aor = Address(uri=aor.uri, name=aor.name)
        self.from_address = sipmsg.with_tag(self.aor, sipmsg.new_tag())
        self.contact_user = contact_user
        self.on_change = on_change
        self.retry_min = retry_min
        self.retry_max = retry_max
        self.account = f"{aor.uri.user}@{aor.uri.host}" if aor.uri.user else str(aor.uri)
        self.status = RegistrationStatus(RegistrationState.UNREGISTERED)
        self.history: list[RegistrationState] = [RegistrationState.UNREGISTERED]
        # Section 10.2.4: every REGISTER of one registration has the same Call-ID and a
        # CSeq one higher than the last, so the registrar can order refreshes.
        self.call_id = sipmsg.new_call_id(ua.transport.advertised_host)
        self._cseq = 0
        self._expires = expires
        self._digest = DigestClient(credentials) if credentials else None
        # The last challenge answered: refreshes carry credentials for it at once, with the
        # next nonce count, instead of being challenged every time.
        self._challenge: Response | None = None
        self._bound_until: float | None = None
        # True while a REGISTER is unanswered: the registrar may have bound us already.
        self._pending = False
        self._task: asyncio.Task[None] | None = None
        self._failures = 0

    # --- public ------------------------------------------------------------------------

    @property
    def contact(self) -> Address:
        """Our Contact as registered (known once the UA's transport is bound)."""
        return self.ua.tl.contact_for(self.contact_user, self.peer)

    @property
    def state(self) -> RegistrationState:
        return self.status.state

    async def start(self) -> None:
        """Send the first REGISTER and return; the registration then runs in a task."""
        if self._task is not None:
            return
        self._task = asyncio.create_task(self._run(), name=f"register {self.account}")
        # One turn of the loop lets the task send the first REGISTER before we return.
        await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop refreshing; remove the binding if one may still be live (Expires: 0)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        loop = asyncio.get_running_loop()
        live = self._bound_until is not None and loop.time() < self._bound_until
        if not live and not self._pending:
            self._set(RegistrationStatus(RegistrationState.UNREGISTERED, "stopped"))
            return
        self._set(RegistrationStatus(RegistrationState.UNREGISTERING, "stopping"))
        try:
            async with asyncio.timeout(UNREGISTER_WAIT):
                outcome = await self._exchange(0)
        except TimeoutError:
            outcome = _Outcome(408, f"no final response within {UNREGISTER_WAIT:g} s")
        self._bound_until = None
        if outcome.ok:
            reason = "unregistered"
        else:
            # The binding then lapses by itself at its expiry.
            reason = f"un-REGISTER failed: {outcome.code} {outcome.reason}"
            log.warning("%s: %s", self.account, reason)
        self._set(RegistrationStatus(RegistrationState.UNREGISTERED, reason, outcome.code))

    # --- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        reason = "starting"
        while True:
            if self.state is not RegistrationState.REGISTERED:
                self._set(RegistrationStatus(RegistrationState.REGISTERING, reason))
            try:
                outcome = await self._exchange(self._expires)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # A bug or a response we cannot read must not end the registration for good.
                log.exception("%s: REGISTER failed unexpectedly", self.account)
                outcome = _Outcome(500, f"internal error: {exc}")
            if outcome.ok and outcome.expires is not None:
                self._failures = 0
                self._bound_until = asyncio.get_running_loop().time() + outcome.expires
                self._set(
                    RegistrationStatus(
                        RegistrationState.REGISTERED,
                        f"{outcome.code} {outcome.reason}, expires {outcome.expires} s",
                        outcome.code,
                        outcome.expires,
                        str(self.contact),
                    )
                )
                delay = self.refresh_delay(outcome.expires)
                log.debug(
                    "%s: registered for %d s, refresh in %.1f s",
                    self.account,
                    outcome.expires,
                    delay,
                )
                await asyncio.sleep(delay)
                reason = "refresh"
                continue
            self._set(
                RegistrationStatus(
                    RegistrationState.FAILED, f"{outcome.code} {outcome.reason}", outcome.code
                )
            )
            delay = self.retry_delay(self._failures)
            self._failures += 1
            log.warning(
                "%s: REGISTER failed (%d %s); retrying in %.1f s",
                self.account,
                outcome.code,
                outcome.reason,
                delay,
            )
            await asyncio.sleep(delay)
            reason = f"retry {self._failures} after {outcome.code}"

    def refresh_delay(self, expires: int) -> float:
        """When to refresh a binding granted for `expires` seconds.

        Late enough not to load the registrar (at least half the time), early enough that a
        refresh whose first transaction times out (Timer F) and that is challenged once more
        still ends before the binding lapses: expires minus Timer F minus a margin.
        """
        margin = self.ua.tl.timers.timeout + 5.0
        return max(expires / 2, expires - margin)

    def retry_delay(self, failures: int) -> float:
        """Wait before the next try after `failures` earlier failures in a row (0 first)."""
        base = min(self.retry_max, self.retry_min * 2.0 ** min(failures, 32))
        return min(self.retry_max, base * random.uniform(1.0, JITTER))

    # --- one REGISTER exchange ---------------------------------------------------------

    async def _exchange(self, expires: int) -> _Outcome:
        """REGISTER until a final answer: challenges answered, 423 followed."""
        request = self._authorized(self._build(expires))
        challenges = 0
        interval_retries = 0
        while True:
            response = await self._send(request, expires)
            if isinstance(response, _Outcome):
                return response
            code = response.code
            if 200 <= code < 300:
                return self._registered(response, expires)
            if code in (401, 407):
                answered = self._answer_challenge(response, expires, challenges)
                if isinstance(answered, _Outcome):
                    return answered
                challenges += 1
                request = answered
                continue
            minimum = self._min_expires(response, expires)
            if minimum is not None and interval_retries < MAX_INTERVAL_RETRIES:
                # Section 10.2.8: retry with at least Min-Expires; keep it for refreshes.
                log.info("%s: 423, registrar wants at least %d s", self.account, minimum)
                interval_retries += 1
                expires = self._expires = minimum
                request = self._authorized(self._build(expires))
                continue
            return _Outcome(code, response.phrase, response)

    async def _send(self, request: Request, expires: int) -> Response | _Outcome:
        """The final response to `request`, or the 408 outcome of a transaction time-out."""
        tx = self.ua.tl.send_request(request, self.peer)
        # Left True if stop() cancels us while waiting: the binding may exist then.
        self._pending = expires > 0
        try:
            response = await tx.final
        except TransactionTimeout:
            self._pending = False
            # Section 8.1.3.1: a transaction time-out is handled as a 408.
            return _Outcome(408, "Request Timeout (no response)")
        self._pending = False
        return response

    def _registered(self, response: Response, expires: int) -> _Outcome:
        granted = self._granted(response, expires)
        if expires and granted <= 0:
            # Not registered after all: handled as a failure, retried later.
            return _Outcome(response.code, f"{response.phrase}, but no binding for our Contact")
        return _Outcome(response.code, response.phrase, response, granted)

    def _answer_challenge(
        self, response: Response, expires: int, challenges: int
    ) -> Request | _Outcome:
        """The REGISTER answering this 401/407, or the outcome when we cannot or may not."""
        code = response.code
        if self._digest is None:
            return _Outcome(code, f"{response.phrase} (no credentials configured)")
        if challenges >= MAX_CHALLENGES:
            return _Outcome(
                code, f"{response.phrase} (credentials refused after {challenges} tries)"
            )
        try:
            request = self._digest.authorize(self._build(expires), response)
        except AuthError as exc:
            return _Outcome(code, f"{response.phrase} (cannot answer challenge: {exc})")
        self._challenge = response
        return request

    @staticmethod
    def _min_expires(response: Response, expires: int) -> int | None:
        """The longer interval a 423 asks for, if it is one and longer than ours."""
        if response.code != 423 or not expires:
            return None
        minimum = _int_header(response, "Min-Expires")
        return minimum if minimum is not None and minimum > expires else None

    def _build(self, expires: int) -> Request:
        self._cseq += 1
        contact = self.contact
        if expires == 0:
            # Section 10.2.2: removing one binding is Expires 0 on that Contact.
            contact = Address(
                uri=contact.uri, name=contact.name, parameters=Parameters(expires="0")
            )
        request = sipmsg.build_request(
            sipmsg.RequestSpec(
                method="REGISTER",
                uri=self.registrar,
                from_address=self.from_address,
                to_address=self.aor,
                call_id=self.call_id,
                cseq=self._cseq,
                contact=contact,
                user_agent=self.ua.user_agent,
            )
        )
        request.headers.set("Expires", str(expires))
        return request

    def _authorized(self, request: Request) -> Request:
        """Credentials for the last challenge, if any (the registrar may still say stale)."""
        if self._digest is None or self._challenge is None:
            return request
        try:
            return self._digest.authorize(request, self._challenge)
        except AuthError:
            return request

    def _granted(self, response: Response, asked: int) -> int:
        """Section 10.2.4: our Contact's expires in the 2xx, else its Expires, else ours."""
        ours = _uri_key(self.contact.uri)
        try:
            contacts = response.contact
        except (ValueError, KeyError, IndexError):
            contacts = []
        for contact in contacts:
            if _uri_key(contact.uri) == ours:
                value = _to_int(contact.parameters.get("expires"))
                if value is not None:
                    return value
        header = _int_header(response, "Expires")
        return header if header is not None else asked

    # --- state ---------------------------------------------------------------------------

    def _set(self, status: RegistrationStatus) -> None:
        old = self.status
        if status == old:
            return
        self.status = status
        if status.state is not old.state:
            log.info("%s: %s -> %s (%s)", self.account, old.state, status.state, status.reason)
            self.history.append(status.state)
            del self.history[:-MAX_HISTORY]
        if self.on_change is not None:
            try:
                self.on_change(status)
            except Exception:
                log.exception("%s: registration listener failed", self.account)


def _to_int(value: str | None) -> int | None:
    if value is None or not value.strip().isdigit():
        return None
    return int(value.strip())


def _int_header(message: Response, name: str) -> int | None:
    return _to_int(message.headers.get(name))


def _uri_key(uri: URI) -> tuple[str, str, str, int, str]:
    """Enough of RFC 3261 section 19.1.4 URI equality to find our Contact in a 2xx."""
    transport = (uri.parameters.get("transport") or "udp").lower()
    return (uri.scheme.lower(), uri.user or "", uri.host.lower(), uri.port or 5060, transport)
