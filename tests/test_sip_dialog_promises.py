"""The UA's dialog promises (RFC 3261), over a fake transport with T1 = 10 ms:

- the 2xx to an INVITE or re-INVITE is sent again on T1 doubling up to T2 until the ACK
  with its CSeq, for 64*T1 (section 13.3.1.4; gateway/sip/uas2xx.py);
- every in-dialog request ends within 64*T1 whatever provisional came, a pending
  re-INVITE is then CANCELled, and so is an abandoned one (gateway/sip/indialog.py);
- glare: a re-INVITE crossing ours gets 491 (14.2), and the retry waits 2.1-4 s when we
  own the Call-ID, 0-2 s otherwise (14.1), on a fake clock;
- a forked INVITE answered by two 2xx: each ACKed with its own To tag, the second BYEd.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import cast

import pytest
from sipmessage import URI, Address, Request, Response

from gateway.sip import indialog
from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.transaction import ServerTransaction, TransactionLayer
from gateway.sip.transport import SipTransport
from gateway.sip.ua import Answered, OutgoingInvite, UserAgent
from gateway.sip.uas2xx import send_2xx_until_ack
from tests.test_sip_transaction import (
    EARLY,
    TCP_PEER,
    TIMERS,
    UDP_PEER,
    FakeTransport,
    Sent,
    incoming,
    intervals,
    make_stack,
    until,
)

SDP_BODY = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
# The loop may run a timer late on a loaded machine; early only by its clock resolution.
LATE = 0.15


class Owner:
    """A dialog owner that answers re-INVITEs 200 through the UA, as a call does."""

    def __init__(self, ua: UserAgent) -> None:
        self.ua = ua
        self.byes: list[Dialog] = []
        self.acks: list[Request] = []

    def on_bye(self, dialog: Dialog) -> None:
        self.byes.append(dialog)

    def on_ack(self, dialog: Dialog, ack: Request) -> None:
        self.acks.append(ack)

    def on_in_dialog_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        response = sipmsg.make_response(request, 200, to_tag=dialog.local_tag)
        self.ua.spawn(self.ua.answer_invite(dialog, tx, response))


def make_ua() -> tuple[UserAgent, FakeTransport]:
    ua = UserAgent("127.0.0.1", 0, timers=TIMERS)
    transport = FakeTransport()
    ua.transport = cast(SipTransport, transport)
    ua.tl = TransactionLayer(cast(SipTransport, transport), TIMERS)
    ua.tl.on_request = ua._on_request
    ua.tl.on_stray_response = ua._on_stray_response
    return ua, transport


@pytest.fixture
def ua() -> Iterator[tuple[UserAgent, FakeTransport]]:
    yield make_ua()


def dialog_with_peer(*, owns_call_id: bool) -> Dialog:
    return Dialog(
        call_id="promises-1@127.0.0.1",
        local_tag="gw1",
        remote_tag="far1",
        local_address=Address.parse("<sip:gw@127.0.0.1>;tag=gw1"),
        remote_address=Address.parse("<sip:far@127.0.0.1>;tag=far1"),
        remote_target=URI.parse("sip:far@127.0.0.1:5060"),
        route_set=(),
        local_cseq=1,
        remote_cseq=1,
        origin=UDP_PEER,
        contact=Address.parse("<sip:gw@127.0.0.1:5070>"),
        owns_call_id=owns_call_id,
    )


def from_peer(dialog: Dialog, method: str, cseq: int, branch: str) -> Request:
    """An in-dialog request from the far end (its From is our To and the other way)."""
    request = incoming(method, branch, cseq, dialog.call_id)
    request.headers.set("From", str(dialog.remote_address))
    request.headers.set("To", str(dialog.local_address))
    request.headers.set("Contact", "<sip:far@127.0.0.1:5060>")
    return request


def sent_requests(transport: FakeTransport, method: str) -> list[Request]:
    return [cast(Request, s.message) for s in transport.requests(method)]


def sent_2xx(transport: FakeTransport, cseq: int) -> list[Sent]:
    return [s for s in transport.responses(200) if cast(Response, s.message).cseq.sequence == cseq]


# --- 2xx retransmission (uas2xx.py) -------------------------------------------------------


async def test_2xx_is_retransmitted_t1_doubling_to_t2_until_the_ack() -> None:
    stack = make_stack(TIMERS)
    stack.transport.receive(incoming("INVITE", "z9hG4bKre1", 2))
    tx = stack.server()
    acked: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
    response = sipmsg.make_response(tx.request, 200, to_tag=tx.to_tag)
    task = asyncio.ensure_future(send_2xx_until_ack(tx, response, acked))
    await until(lambda: len(stack.transport.responses(200)) >= 5)
    ack = incoming("ACK", "z9hG4bKack", 2)
    acked.set_result(ack)
    assert await task is ack
    gaps = intervals(stack.transport.responses(200))[:4]
    # T1, 2*T1, then capped at T2 (10, 20, 40, 40 ms).
    for gap, expected in zip(gaps, (0.01, 0.02, 0.04, 0.04), strict=True):
        assert expected - EARLY <= gap < expected + LATE, gaps
    sent = len(stack.transport.responses(200))
    await asyncio.sleep(0.1)
    assert len(stack.transport.responses(200)) == sent  # nothing after the ACK


async def test_2xx_without_ack_gives_up_after_64_t1() -> None:
    stack = make_stack(TIMERS)
    stack.transport.receive(incoming("INVITE", "z9hG4bKre2", 2))
    tx = stack.server()
    acked: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
    loop = asyncio.get_running_loop()
    started = loop.time()
    response = sipmsg.make_response(tx.request, 200, to_tag=tx.to_tag)
    assert await send_2xx_until_ack(tx, response, acked) is None
    assert loop.time() - started >= TIMERS.timeout - EARLY
    # 0.64 s at T1 10 ms, T2 40 ms: about 18 sends, never a flood.
    assert 10 <= len(stack.transport.responses(200)) <= 20
    assert acked.cancelled()


async def test_2xx_over_tcp_goes_once() -> None:
    stack = make_stack(TIMERS)
    stack.transport.receive(incoming("INVITE", "z9hG4bKre3", 2), TCP_PEER)
    tx = stack.server()
    acked: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
    response = sipmsg.make_response(tx.request, 200, to_tag=tx.to_tag)
    task = asyncio.ensure_future(send_2xx_until_ack(tx, response, acked))
    await asyncio.sleep(0.1)
    ack = incoming("ACK", "z9hG4bKack3", 2)
    acked.set_result(ack)
    assert await task is ack
    assert len(stack.transport.responses(200)) == 1


async def test_reinvite_2xx_stops_only_at_the_ack_with_its_cseq(
    ua: tuple[UserAgent, FakeTransport],
) -> None:
    agent, transport = ua
    dialog = dialog_with_peer(owns_call_id=False)
    owner = Owner(agent)
    agent.register_dialog(dialog, owner)
    transport.receive(from_peer(dialog, "INVITE", 2, "z9hG4bKfar2"))
    await until(lambda: len(sent_2xx(transport, 2)) >= 3)
    # A late copy of the first INVITE's ACK (CSeq 1) does not stop this 2xx's resends.
    transport.receive(from_peer(dialog, "ACK", 1, "z9hG4bKfarack1"))
    count = len(sent_2xx(transport, 2))
    await until(lambda: len(sent_2xx(transport, 2)) > count)
    transport.receive(from_peer(dialog, "ACK", 2, "z9hG4bKfarack2"))
    await asyncio.sleep(0)
    count = len(sent_2xx(transport, 2))
    await asyncio.sleep(0.15)
    assert len(sent_2xx(transport, 2)) == count
    assert [a.cseq.sequence for a in owner.acks] == [1]  # the stray one went to the owner
    agent.unregister_dialog(dialog)


# --- deadlines and CANCEL (indialog.py) ---------------------------------------------------


async def test_reinvite_answered_100_only_fails_at_64_t1_and_is_cancelled(
    ua: tuple[UserAgent, FakeTransport],
) -> None:
    agent, transport = ua
    dialog = dialog_with_peer(owns_call_id=True)
    loop = asyncio.get_running_loop()
    started = loop.time()
    task = asyncio.ensure_future(agent.reinvite(dialog, SDP_BODY))
    await until(lambda: bool(sent_requests(transport, "INVITE")))
    (invite,) = sent_requests(transport, "INVITE")
    transport.receive(sipmsg.make_response(invite, 100))
    assert await task is None
    assert TIMERS.timeout - EARLY <= loop.time() - started < TIMERS.timeout + LATE
    (cancel,) = sent_requests(transport, "CANCEL")
    assert cancel.cseq.sequence == invite.cseq.sequence
    assert sipmsg.branch_of(cancel) == sipmsg.branch_of(invite)
    transport.receive(sipmsg.make_response(invite, 487, to_tag="far1"))
    await until(lambda: agent.tl.active == 0, timeout=3)


async def test_abandoned_reinvite_is_cancelled_once_a_provisional_came_and_a_late_2xx_acked(
    ua: tuple[UserAgent, FakeTransport],
) -> None:
    agent, transport = ua
    dialog = dialog_with_peer(owns_call_id=True)
    task = asyncio.ensure_future(agent.reinvite(dialog, SDP_BODY))
    await until(lambda: bool(sent_requests(transport, "INVITE")))
    (invite,) = sent_requests(transport, "INVITE")
    task.cancel()  # the page hung up
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not sent_requests(transport, "CANCEL")  # section 9.1: not before a provisional
    transport.receive(sipmsg.make_response(invite, 180, to_tag="far1"))
    assert len(sent_requests(transport, "CANCEL")) == 1
    # The 2xx crossed the CANCEL: it is still ACKed, with the re-INVITE's CSeq.
    ok = sipmsg.make_response(invite, 200, to_tag="far1")
    transport.receive(ok)
    transport.receive(ok)
    acks = sent_requests(transport, "ACK")
    assert [a.cseq.sequence for a in acks] == [invite.cseq.sequence] * 2
    assert not agent.reinvite_pending(dialog)


async def test_hung_up_reinvite_with_100_cancels_at_once(
    ua: tuple[UserAgent, FakeTransport],
) -> None:
    agent, transport = ua
    dialog = dialog_with_peer(owns_call_id=True)
    task = asyncio.ensure_future(agent.reinvite(dialog, SDP_BODY))
    await until(lambda: bool(sent_requests(transport, "INVITE")))
    (invite,) = sent_requests(transport, "INVITE")
    transport.receive(sipmsg.make_response(invite, 100))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert len(sent_requests(transport, "CANCEL")) == 1
    bye = asyncio.ensure_future(agent.bye(dialog))
    await asyncio.sleep(0)  # one loop turn: the BYE does not wait for the re-INVITE
    (request,) = sent_requests(transport, "BYE")
    transport.receive(sipmsg.make_response(request, 200))
    assert await bye == 200


# --- glare (491) --------------------------------------------------------------------------


class LowestRandom(random.Random):
    """uniform(a, b) at its lower bound, so the test knows which range was used."""

    def uniform(self, a: float, b: float) -> float:
        return a


@pytest.mark.parametrize(("owns_call_id", "wait"), [(True, 2.1), (False, 0.0)])
async def test_glare_crossing_reinvite_gets_491_and_the_retry_waits_by_call_id_owner(
    ua: tuple[UserAgent, FakeTransport],
    monkeypatch: pytest.MonkeyPatch,
    owns_call_id: bool,
    wait: float,
) -> None:
    agent, transport = ua
    waits: list[float] = []

    async def fake_sleep(delay: float) -> None:
        waits.append(delay)  # a fake clock: the retry goes without real waiting

    monkeypatch.setattr(indialog, "_sleep", fake_sleep)
    monkeypatch.setattr(indialog, "_rng", LowestRandom())
    dialog = dialog_with_peer(owns_call_id=owns_call_id)
    agent.register_dialog(dialog, Owner(agent))
    task = asyncio.ensure_future(agent.reinvite(dialog, SDP_BODY))
    await until(lambda: bool(sent_requests(transport, "INVITE")))
    # Both sides re-INVITE at once: theirs is refused while ours is pending (14.2) ...
    transport.receive(from_peer(dialog, "INVITE", 2, "z9hG4bKglare"))
    assert len(transport.responses(491)) == 1 and not transport.responses(200)
    # ... and ours too.
    first = sent_requests(transport, "INVITE")[0]
    transport.receive(sipmsg.make_response(first, 491, to_tag="far1"))
    await until(lambda: len(sent_requests(transport, "INVITE")) == 2)
    assert waits == [wait]
    retry = sent_requests(transport, "INVITE")[1]
    assert retry.cseq.sequence == first.cseq.sequence + 1
    transport.receive(sipmsg.make_response(retry, 200, to_tag="far1"))
    response = await task
    assert response is not None and response.code == 200
    # The transaction ACKs the 491; the UA the 2xx (section 17.1.1.3 and 13.2.2.4).
    acks = [a.cseq.sequence for a in sent_requests(transport, "ACK")]
    assert acks == [first.cseq.sequence, retry.cseq.sequence]
    agent.unregister_dialog(dialog)


def test_glare_wait_ranges() -> None:
    owner = dialog_with_peer(owns_call_id=True)
    other = dialog_with_peer(owns_call_id=False)
    owner_waits = [indialog.glare_wait(owner) for _ in range(500)]
    other_waits = [indialog.glare_wait(other) for _ in range(500)]
    assert 2.1 <= min(owner_waits) and max(owner_waits) <= 4.0
    assert 0.0 <= min(other_waits) and max(other_waits) <= 2.0


# --- forked INVITE ------------------------------------------------------------------------


async def test_second_fork_2xx_is_acked_with_its_own_tag_and_byed(
    ua: tuple[UserAgent, FakeTransport],
) -> None:
    agent, transport = ua
    invite = OutgoingInvite(
        agent,
        target=URI.parse("sip:bob@127.0.0.1:5060"),
        peer=UDP_PEER,
        from_address=Address.parse("<sip:gw@127.0.0.1>"),
        to_address=Address.parse("<sip:bob@127.0.0.1>"),
        sdp=SDP_BODY,
        credentials=None,
    )
    task = asyncio.ensure_future(invite.run())
    await until(lambda: bool(sent_requests(transport, "INVITE")))
    (request,) = sent_requests(transport, "INVITE")

    def ok(tag: str) -> Response:
        response = sipmsg.make_response(request, 200, to_tag=tag)
        response.headers.set("Contact", f"<sip:{tag}@127.0.0.1:5060>")
        response.body = SDP_BODY
        return response

    transport.receive(ok("forka"))
    transport.receive(ok("forkb"))
    transport.receive(ok("forkb"))  # a retransmission: ACKed again, BYEd once
    outcome = await task
    assert isinstance(outcome, Answered) and outcome.dialog.remote_tag == "forka"
    await until(lambda: bool(sent_requests(transport, "BYE")))
    acks = sent_requests(transport, "ACK")
    assert [sipmsg.tag_of(a.to_address) for a in acks] == ["forka", "forkb", "forkb"]
    assert [str(a.uri) for a in acks][1] == "sip:forkb@127.0.0.1:5060"
    (bye,) = sent_requests(transport, "BYE")
    assert sipmsg.tag_of(bye.to_address) == "forkb"
    assert str(bye.uri) == "sip:forkb@127.0.0.1:5060"
    assert outcome.dialog.state is DialogState.CONFIRMED
    transport.receive(sipmsg.make_response(bye, 200))
