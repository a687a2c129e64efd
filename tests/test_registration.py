"""SIP registration (gateway/sip/registration.py) against sipp registrars and Kamailio.

Every test runs a real UserAgent on 127.0.0.1, port 0, with T1 = 50 ms (Timer F 3.2 s).
The sipp scenarios are tests/sipp/uas_register_*.xml; each describes what it checks.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
from sipmessage import URI, Address, Request

from gateway.sip import message as sipmsg
from gateway.sip.auth import Credentials, parse_auth_header
from gateway.sip.registration import Registration, RegistrationState, RegistrationStatus
from gateway.sip.transaction import Timers
from gateway.sip.transport import Peer, TransportKind
from gateway.sip.ua import Failed, IncomingInvite, UserAgent
from tests.support.kamailio import Kamailio, kamailio_available
from tests.support.sipp import SippUac, SippUas, sipp_available

S = RegistrationState
AOR = Address.parse("<sip:alice@sipgw.test>")
ALICE = Credentials("alice", "secret")

kamailio_mark = pytest.mark.kamailio
no_kamailio = pytest.mark.skipif(
    not kamailio_available(), reason="kamailio not installed (Debian package kamailio)"
)
no_sipp = pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)")


class StatusLog:
    """on_change target: keeps every status and lets a test await one."""

    def __init__(self) -> None:
        self.statuses: list[RegistrationStatus] = []
        self._changed = asyncio.Event()

    def __call__(self, status: RegistrationStatus) -> None:
        self.statuses.append(status)
        self._changed.set()

    async def until(
        self, predicate: Callable[[RegistrationStatus], bool], timeout: float = 10.0
    ) -> RegistrationStatus:
        """The first status (seen so far or to come) matching `predicate`."""
        async with asyncio.timeout(timeout):
            seen = 0
            while True:
                for status in self.statuses[seen:]:
                    if predicate(status):
                        return status
                seen = len(self.statuses)
                self._changed.clear()
                await self._changed.wait()

    async def state(self, state: RegistrationState, timeout: float = 10.0) -> RegistrationStatus:
        return await self.until(lambda s: s.state is state, timeout)


@asynccontextmanager
async def user_agent() -> AsyncIterator[UserAgent]:
    ua = UserAgent("127.0.0.1", 0, timers=Timers(t1=0.05))
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close()


def registration(ua: UserAgent, uas: SippUas, log: StatusLog, **changes: object) -> Registration:
    options: dict[str, object] = {
        "registrar": URI.parse("sip:sipgw.test"),
        "peer": Peer(TransportKind.UDP, "127.0.0.1", uas.port),
        "aor": AOR,
        "credentials": ALICE,
        "expires": 600,
        "contact_user": "alice",
        "on_change": log,
        "retry_min": 0.2,
        "retry_max": 1.0,
    }
    options.update(changes)
    return Registration(ua, **options)  # type: ignore[arg-type]


def registers(uas: SippUas) -> list[Request]:
    """The REGISTERs sipp received, one per CSeq (UDP retransmissions dropped), in order."""
    by_cseq: dict[int, Request] = {}
    for text in uas.received("REGISTER "):
        message = sipmsg.parse(text.encode() + b"\r\n\r\n")
        assert isinstance(message, Request)
        by_cseq.setdefault(message.cseq.sequence, message)
    return [by_cseq[key] for key in sorted(by_cseq)]


def auth_params(request: Request) -> dict[str, str]:
    (challenge,) = parse_auth_header(request.headers["Authorization"])
    return dict(challenge.parameters.items())


def assert_one_registration(requests: list[Request], ua: UserAgent) -> None:
    """Section 10.2.4: one Call-ID, CSeq going up by one, To and From the address of record."""
    assert len({r.call_id for r in requests}) == 1
    assert [r.cseq.sequence for r in requests] == list(range(1, len(requests) + 1))
    for request in requests:
        assert str(request.uri) == "sip:sipgw.test"
        assert request.to_address.uri == AOR.uri and sipmsg.tag_of(request.to_address) is None
        assert request.from_address.uri == AOR.uri
        (contact,) = request.contact
        assert (contact.uri.user, contact.uri.host, contact.uri.port) == (
            "alice",
            "127.0.0.1",
            ua.port,
        )
    assert len({sipmsg.tag_of(r.from_address) for r in requests}) == 1


# --- pure parts ---------------------------------------------------------------------------


async def test_refresh_and_retry_delays() -> None:
    async with user_agent() as ua:
        reg = Registration(
            ua,
            registrar=URI.parse("sip:sipgw.test"),
            peer=Peer(TransportKind.UDP, "127.0.0.1", 9),
            aor=AOR,
            credentials=None,
            contact_user="alice",
            retry_min=2.0,
            retry_max=300.0,
        )
        # Timer F is 3.2 s here: refresh 8.2 s early, but never before half the time.
        assert reg.refresh_delay(600) == pytest.approx(591.8)
        assert reg.refresh_delay(10) == 5
        assert reg.refresh_delay(2) == 1
        for failures, base in ((0, 2.0), (1, 4.0), (3, 16.0), (7, 256.0)):
            for _ in range(20):
                assert base <= reg.retry_delay(failures) <= base * 1.25
        assert all(reg.retry_delay(n) <= 300.0 for n in (8, 9, 50, 10_000))
        assert reg.retry_delay(8) >= 256.0
        assert reg.contact == Address.parse(f"<sip:alice@127.0.0.1:{ua.port}>")
        assert reg.status == RegistrationStatus(S.UNREGISTERED)
        await reg.stop()  # never started: nothing sent, nothing to remove
        assert reg.history == [S.UNREGISTERED]


# --- against sipp -------------------------------------------------------------------------


@pytest.mark.sipp
@no_sipp
async def test_digest_register_then_stop_unregisters() -> None:
    log = StatusLog()
    async with SippUas("uas_register_auth") as uas, user_agent() as ua:
        reg = registration(ua, uas, log)
        await reg.start()
        status = await log.state(S.REGISTERED)
        # The Contact's expires=300 beats the 200's Expires: 100 header.
        assert status == RegistrationStatus(
            S.REGISTERED, "200 OK, expires 300 s", 200, 300, f"<sip:alice@127.0.0.1:{ua.port}>"
        )
        await reg.stop()
        assert reg.status.state is S.UNREGISTERED and reg.status.code == 200
        assert reg.history == [
            S.UNREGISTERED,
            S.REGISTERING,
            S.REGISTERED,
            S.UNREGISTERING,
            S.UNREGISTERED,
        ]
        assert await uas.wait(timeout=10) == 0, uas.summary()
    first, answered, unregister = registers(uas)
    assert_one_registration([first, answered, unregister], ua)
    assert first.headers.get("Authorization") is None
    assert first.headers["Expires"] == "600" and answered.headers["Expires"] == "600"
    # stop(): Expires 0 on the header and on our Contact, credentials for the same nonce.
    assert unregister.headers["Expires"] == "0"
    assert unregister.contact[0].parameters.get("expires") == "0"
    params, again = auth_params(answered), auth_params(unregister)
    assert (params["username"], params["realm"], params["qop"]) == ("alice", "sipgw.test", "auth")
    assert again["nonce"] == params["nonce"]
    assert (params["nc"], again["nc"]) == ("00000001", "00000002")


@pytest.mark.sipp
@no_sipp
async def test_interval_too_brief_retries_with_min_expires() -> None:
    log = StatusLog()
    async with SippUas("uas_register_423", keys={"min_expires": "120"}) as uas:
        async with user_agent() as ua:
            reg = registration(ua, uas, log, expires=60, credentials=None)
            await reg.start()
            status = await log.state(S.REGISTERED)
            # No expires on our Contact in the 200: its Expires header is what was granted.
            assert (status.code, status.expires) == (200, 120)
            await reg.stop()
            assert reg.history == [
                S.UNREGISTERED,
                S.REGISTERING,
                S.REGISTERED,
                S.UNREGISTERING,
                S.UNREGISTERED,
            ]
            assert await uas.wait(timeout=10) == 0, uas.summary()
    requests = registers(uas)
    assert_one_registration(requests, ua)
    assert [r.headers["Expires"] for r in requests] == ["60", "120", "0"]
    assert "SIP/2.0 423 Interval Too Brief" in uas.messages()


@pytest.mark.sipp
@no_sipp
async def test_stale_nonce_on_refresh_is_answered_again() -> None:
    log = StatusLog()
    async with SippUas("uas_register_stale") as uas, user_agent() as ua:
        reg = registration(ua, uas, log)
        await reg.start()
        first = await log.state(S.REGISTERED)
        assert first.expires == 1
        # The refresh after ~0.5 s is challenged stale=true and answered: no failure between.
        second = await log.until(lambda s: s.expires == 300)
        assert second.state is S.REGISTERED
        await reg.stop()
        assert reg.history == [
            S.UNREGISTERED,
            S.REGISTERING,
            S.REGISTERED,
            S.UNREGISTERING,
            S.UNREGISTERED,
        ]
        assert await uas.wait(timeout=10) == 0, uas.summary()
    requests = registers(uas)
    assert_one_registration(requests, ua)
    assert len(requests) == 5
    unauthenticated, answered, refresh, reanswered, unregister = requests
    assert unauthenticated.headers.get("Authorization") is None
    nonces = [auth_params(r)["nonce"] for r in (answered, refresh, reanswered, unregister)]
    counts = [auth_params(r)["nc"] for r in (answered, refresh, reanswered, unregister)]
    # The refresh reused the first nonce (and counted up); after stale=true, the new nonce.
    assert nonces[0] == nonces[1] and nonces[0].endswith("n1")
    assert nonces[2] == nonces[3] and nonces[2].endswith("n2")
    assert counts == ["00000001", "00000002", "00000001", "00000002"]
    assert "stale=true" in uas.sent("SIP/2.0 401")[1]


@pytest.mark.sipp
@no_sipp
async def test_refresh_before_expiry() -> None:
    log = StatusLog()
    async with SippUas("uas_register_refresh") as uas, user_agent() as ua:
        reg = registration(ua, uas, log, credentials=None)
        await reg.start()
        assert (await log.state(S.REGISTERED)).expires == 2
        # sipp fails the call if the refresh does not come within 2 s of its 200.
        await log.until(lambda s: s.expires == 300, timeout=5)
        await reg.stop()
        assert await uas.wait(timeout=10) == 0, uas.summary()
    requests = registers(uas)
    assert_one_registration(requests, ua)
    assert [r.headers["Expires"] for r in requests] == ["600", "600", "0"]
    assert reg.history == [
        S.UNREGISTERED,
        S.REGISTERING,
        S.REGISTERED,
        S.UNREGISTERING,
        S.UNREGISTERED,
    ]


@pytest.mark.sipp
@no_sipp
async def test_no_answer_fails_with_408_then_retries() -> None:
    log = StatusLog()
    async with SippUas("uas_register_silent") as uas, user_agent() as ua:
        reg = registration(ua, uas, log, credentials=None)
        loop = asyncio.get_running_loop()
        started = loop.time()
        await reg.start()
        failed = await log.state(S.FAILED)
        # Timer F (64 * T1 = 3.2 s) ended the first REGISTER.
        assert loop.time() - started >= 3.1
        assert failed.code == 408 and failed.reason is not None and "408" in failed.reason
        # The retry (after 0.2-0.25 s of back-off) reaches the registrar, now answering.
        registered = await log.state(S.REGISTERED)
        assert registered.expires == 300
        await reg.stop()
        assert reg.history == [
            S.UNREGISTERED,
            S.REGISTERING,
            S.FAILED,
            S.REGISTERING,
            S.REGISTERED,
            S.UNREGISTERING,
            S.UNREGISTERED,
        ]
        assert await uas.wait(timeout=10) == 0, uas.summary()
    requests = registers(uas)
    assert_one_registration(requests, ua)
    assert len(requests) == 3
    # The first REGISTER was retransmitted (Timer E) while nobody answered.
    assert len(uas.received("REGISTER ")) > len(requests)


@pytest.mark.sipp
@no_sipp
async def test_forbidden_fails_with_reason_and_stop_sends_nothing() -> None:
    log = StatusLog()
    async with SippUas("uas_register_forbidden") as uas, user_agent() as ua:
        reg = registration(ua, uas, log, retry_min=60.0, retry_max=120.0)
        await reg.start()
        failed = await log.state(S.FAILED)
        assert (failed.code, failed.reason, failed.expires) == (403, "403 Forbidden", None)
        assert await uas.wait(timeout=10) == 0, uas.summary()
        await reg.stop()
        # Never bound: nothing to remove.
        assert reg.history == [S.UNREGISTERED, S.REGISTERING, S.FAILED, S.UNREGISTERED]
    assert len(registers(uas)) == 1


@pytest.mark.sipp
@no_sipp
async def test_gives_up_after_two_answered_challenges() -> None:
    log = StatusLog()
    async with SippUas("uas_register_challenge_always") as uas, user_agent() as ua:
        reg = registration(ua, uas, log, retry_min=60.0, retry_max=120.0)
        await reg.start()
        failed = await log.state(S.FAILED)
        assert failed.code == 401
        assert failed.reason is not None and "refused after 2" in failed.reason
        assert await uas.wait(timeout=10) == 0, uas.summary()
        await reg.stop()
    requests = registers(uas)
    assert len(requests) == 3
    assert requests[0].headers.get("Authorization") is None
    assert [auth_params(r)["nonce"][-2:] for r in requests[1:]] == ["n1", "n2"]


@pytest.mark.sipp
@no_sipp
async def test_failed_refresh_of_a_live_binding_still_unregisters_on_stop() -> None:
    log = StatusLog()
    async with SippUas("uas_register_refresh_refused") as uas, user_agent() as ua:
        reg = registration(ua, uas, log, credentials=None, retry_min=60.0, retry_max=120.0)
        await reg.start()
        assert (await log.state(S.REGISTERED)).expires == 4
        # The refresh (after 2 s) is refused; the binding has 2 s left.
        failed = await log.state(S.FAILED)
        assert failed.code == 403
        await reg.stop()
        assert reg.history == [
            S.UNREGISTERED,
            S.REGISTERING,
            S.REGISTERED,
            S.FAILED,
            S.UNREGISTERING,
            S.UNREGISTERED,
        ]
        assert await uas.wait(timeout=10) == 0, uas.summary()
    assert [r.headers["Expires"] for r in registers(uas)] == ["600", "600", "0"]


# --- against Kamailio ---------------------------------------------------------------------


@kamailio_mark
@pytest.mark.sipp
@no_kamailio
@no_sipp
@pytest.mark.parametrize(
    ("user", "transport"), [("alice", TransportKind.UDP), ("bob", TransportKind.TCP)]
)
async def test_kamailio_routes_calls_to_the_registered_contact_until_stop(
    user: str, transport: TransportKind
) -> None:
    invites: list[IncomingInvite] = []

    def busy(incoming: IncomingInvite) -> None:
        invites.append(incoming)
        incoming.reject(486)

    log = StatusLog()
    async with Kamailio() as kamailio, user_agent() as ua, user_agent() as caller:
        ua.on_invite = busy
        aor = Address.parse(f"<sip:{user}@sipgw.test>")
        reg = Registration(
            ua,
            registrar=URI.parse("sip:sipgw.test"),
            peer=kamailio.peer(transport),
            aor=aor,
            credentials=Credentials(user, "secret"),
            expires=600,
            contact_user=user,
            on_change=log,
        )
        await reg.start()
        status = await log.state(S.REGISTERED)
        assert (status.code, status.expires) == (200, 600), kamailio.log()[-3000:]
        assert status.contact == str(reg.contact)

        # sipp calls the user at Kamailio; Kamailio finds our Contact and relays the INVITE.
        target = f"{kamailio.host}:{kamailio.port}"
        async with SippUac("uac_busy", target, service=user) as uac:
            assert await uac.wait(timeout=15) == 0, uac.summary() + kamailio.log()[-3000:]
        assert uac.received("SIP/2.0 486")
        (incoming,) = invites
        assert incoming.request.uri == reg.contact.uri
        assert incoming.peer.transport is transport
        assert incoming.request.from_address.uri.user == "caller"
        # Record-Route: once, or twice when Kamailio changes transport (UDP in, TCP out).
        record_routes = incoming.request.headers.getlist("Record-Route")
        assert len(record_routes) == (1 if transport is TransportKind.UDP else 2)
        assert all(f"127.0.0.1:{kamailio.port}" in route for route in record_routes)

        await reg.stop()
        assert reg.status.state is S.UNREGISTERED and reg.status.code == 200
        assert reg.history == [
            S.UNREGISTERED,
            S.REGISTERING,
            S.REGISTERED,
            S.UNREGISTERING,
            S.UNREGISTERED,
        ]
        # The binding is gone: Kamailio has nowhere to send the next call.
        outcome = await caller.invite(
            target=URI.parse(kamailio.uri(user)),
            peer=kamailio.peer(),
            from_address=Address.parse("<sip:carol@sipgw.test>"),
            to_address=Address.parse(f"<{kamailio.uri(user)}>"),
            sdp=b"",
            credentials=None,
        ).run()
        assert isinstance(outcome, Failed) and outcome.code in (404, 480), outcome
        assert len(invites) == 1
