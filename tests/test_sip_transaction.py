"""gateway.sip.transaction: RFC 3261 section 17 state machines with RFC 6026's Accepted state.

The layer runs over a fake transport that records what it sends, with T1 = 10 ms, so
every timer (A to M) fires within a second. Tests await conditions with time-outs; the only
waiting is for the timers themselves.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import cast

import pytest
from sipmessage import URI, Address, Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.transaction import (
    ClientTransaction,
    ServerTransaction,
    Timers,
    TransactionLayer,
    TransactionState,
    TransactionTimeout,
)
from gateway.sip.transport import MessageHandler, Peer, SipTransport, TransportKind

CALLING = TransactionState.CALLING
TRYING = TransactionState.TRYING
PROCEEDING = TransactionState.PROCEEDING
ACCEPTED = TransactionState.ACCEPTED
COMPLETED = TransactionState.COMPLETED
CONFIRMED = TransactionState.CONFIRMED
TERMINATED = TransactionState.TERMINATED

TIMERS = Timers(t1=0.01, t2=0.04, t4=0.05)
UDP_PEER = Peer(TransportKind.UDP, "127.0.0.1", 5060)
TCP_PEER = Peer(TransportKind.TCP, "127.0.0.1", 5060)
# Scheduling slack: asyncio may fire a timer up to its clock resolution early.
EARLY = 0.002


@dataclass
class Sent:
    message: Request | Response
    peer: Peer
    at: float


@dataclass
class FakeTransport:
    """What TransactionLayer needs of SipTransport: addresses, on_message and send()."""

    host: str = "127.0.0.1"
    advertised_host: str = "127.0.0.1"
    port: int = 5070
    on_message: MessageHandler | None = None
    sent: list[Sent] = field(default_factory=list)

    def send(self, message: Request | Response, peer: Peer) -> None:
        self.sent.append(Sent(message, peer, asyncio.get_running_loop().time()))

    async def close(self) -> None:
        self.on_message = None

    def requests(self, method: str) -> list[Sent]:
        return [
            s for s in self.sent if isinstance(s.message, Request) and s.message.method == method
        ]

    def responses(self, code: int | None = None) -> list[Sent]:
        return [
            s
            for s in self.sent
            if isinstance(s.message, Response) and (code is None or s.message.code == code)
        ]

    def receive(self, message: Request | Response, peer: Peer = UDP_PEER) -> None:
        """A message from the network, through the same serialise/parse as the real one."""
        assert self.on_message is not None  # the layer installed itself
        parsed = sipmsg.parse(sipmsg.serialize(message))
        self.on_message(parsed, peer)


@dataclass
class Stack:
    transport: FakeTransport
    layer: TransactionLayer
    requests: list[tuple[Request, Peer, ServerTransaction | None]]
    transactions: list[ClientTransaction | ServerTransaction] = field(default_factory=list)

    def send(
        self,
        method: str,
        peer: Peer = UDP_PEER,
        on_response: Callable[[Response], None] | None = None,
    ) -> ClientTransaction:
        tx = self.layer.send_request(new_request(method), peer, on_response)
        self.transactions.append(tx)
        return tx

    def server(self, index: int = -1) -> ServerTransaction:
        tx = self.requests[index][2]
        assert tx is not None
        if tx not in self.transactions:
            self.transactions.append(tx)
        return tx


def make_stack(timers: Timers) -> Stack:
    transport = FakeTransport()
    layer = TransactionLayer(cast(SipTransport, transport), timers)
    requests: list[tuple[Request, Peer, ServerTransaction | None]] = []
    layer.on_request = lambda request, peer, tx: requests.append((request, peer, tx))
    return Stack(transport, layer, requests)


def check_nothing_left(stack: Stack) -> None:
    """Every scenario ends with nothing left: no transaction in the layer, no timer pending."""
    assert stack.layer.active == 0
    for tx in stack.transactions:
        assert tx.state is TERMINATED
        assert not tx._timers, f"{tx.request.method} left timers {list(tx._timers)}"


@pytest.fixture
def stack() -> Iterator[Stack]:
    stack = make_stack(TIMERS)
    yield stack
    check_nothing_left(stack)


@pytest.fixture
def slow_stack() -> Iterator[Stack]:
    """Default timers (T1 0.5 s, T4 5 s): a timer that must be zero on TCP clearly is."""
    stack = make_stack(Timers())
    yield stack
    check_nothing_left(stack)


async def until(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def new_request(method: str, cseq: int = 1) -> Request:
    return sipmsg.build_request(
        sipmsg.RequestSpec(
            method=method,
            uri=URI.parse("sip:bob@127.0.0.1:5060"),
            from_address=Address.parse("<sip:alice@127.0.0.1>;tag=alice1"),
            to_address=Address.parse("<sip:bob@127.0.0.1>"),
            call_id=f"{method.lower()}-{sipmsg.new_tag()}@127.0.0.1",
            cseq=cseq,
            route=(Address.parse("<sip:proxy.example.com;lr>"),),
        )
    )


def answer(request: Request, code: int, to_tag: str = "bob1") -> Response:
    return sipmsg.make_response(request, code, to_tag=to_tag)


def incoming(method: str, branch: str, cseq: int = 1, call_id: str = "in-1@127.0.0.1") -> Request:
    """A request from the peer, with its own Via."""
    request = new_request(method, cseq)
    request.headers.set("Call-ID", call_id)
    request.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch={branch};rport")
    return request


def intervals(sent: list[Sent]) -> list[float]:
    return [later.at - earlier.at for earlier, later in itertools.pairwise(sent)]


# --- INVITE client transaction (section 17.1.1) -----------------------------------------------


async def test_invite_client_timer_a_doubles_until_a_provisional(stack: Stack) -> None:
    tx = stack.send("INVITE")
    assert tx.state is CALLING
    assert stack.transport.sent[0].message is tx.request
    assert sipmsg.branch_of(tx.request).startswith(sipmsg.MAGIC_COOKIE)
    await until(lambda: len(stack.transport.requests("INVITE")) >= 5)
    gaps = intervals(stack.transport.requests("INVITE"))
    # Timer A: T1, 2*T1, 4*T1, 8*T1, not capped at T2 (8*T1 > T2 here).
    for index, gap in enumerate(gaps[:4]):
        assert gap >= TIMERS.t1 * 2**index - EARLY, gaps
    stack.transport.receive(answer(tx.request, 100, to_tag=""))
    assert tx.state is PROCEEDING and tx.provisional_seen
    count = len(stack.transport.requests("INVITE"))
    stack.transport.receive(answer(tx.request, 486))
    assert tx.state is COMPLETED
    assert len(stack.transport.requests("INVITE")) == count  # Timer A stopped at the 100
    await until(lambda: tx.state is TERMINATED)
    assert len(stack.transport.requests("INVITE")) == count
    assert tx.history == [CALLING, PROCEEDING, COMPLETED, TERMINATED]


async def test_invite_client_timer_b_times_out(stack: Stack) -> None:
    responses: list[Response] = []
    tx = stack.send("INVITE", on_response=responses.append)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(TransactionTimeout):
        await asyncio.wait_for(tx.final, 2)
    assert loop.time() - started >= TIMERS.timeout - EARLY
    assert tx.history == [CALLING, TERMINATED]
    assert responses == []
    assert stack.layer.active == 0
    # Doubling from T1 within 64*T1 leaves room for six retransmissions at most.
    assert 2 <= len(stack.transport.requests("INVITE")) <= 7


async def test_invite_client_non_2xx_final_is_acked_by_the_transaction(stack: Stack) -> None:
    responses: list[Response] = []
    tx = stack.send("INVITE", on_response=responses.append)
    stack.transport.receive(answer(tx.request, 180))
    busy = answer(tx.request, 486, to_tag="busy-tag")
    stack.transport.receive(busy)
    assert tx.state is COMPLETED
    assert (await tx.final).code == 486
    assert [r.code for r in responses] == [180, 486]
    acks = stack.transport.requests("ACK")
    assert len(acks) == 1
    ack = acks[0].message
    assert isinstance(ack, Request) and acks[0].peer == UDP_PEER
    # Section 17.1.1.3: same Request-URI, top Via (branch), From, Call-ID and Route as the
    # INVITE, the To of the response (its tag), CSeq number of the INVITE with method ACK.
    assert ack.uri == tx.request.uri
    assert sipmsg.branch_of(ack) == sipmsg.branch_of(tx.request)
    assert ack.headers.getlist("Via") == tx.request.headers.getlist("Via")[:1]
    assert sipmsg.tag_of(ack.to_address) == "busy-tag"
    assert ack.headers["From"] == tx.request.headers["From"]
    assert ack.call_id == tx.request.call_id
    assert (ack.cseq.sequence, ack.cseq.method) == (tx.request.cseq.sequence, "ACK")
    assert ack.headers.getlist("Route") == tx.request.headers.getlist("Route")
    assert ack.body == b""
    # A retransmitted final response is answered with the same ACK, not passed up again.
    stack.transport.receive(busy)
    assert [s.message for s in stack.transport.requests("ACK")] == [ack, ack]
    assert len(responses) == 2
    completed_at = asyncio.get_running_loop().time()
    await until(lambda: tx.state is TERMINATED)
    # Timer D: 64*T1 here (at least 32 s with the default T1) on an unreliable transport.
    assert asyncio.get_running_loop().time() - completed_at >= TIMERS.timeout - 0.05
    assert tx.history == [CALLING, PROCEEDING, COMPLETED, TERMINATED]


async def test_invite_client_2xx_goes_to_accepted(stack: Stack) -> None:
    responses: list[Response] = []
    tx = stack.send("INVITE", on_response=responses.append)
    stack.transport.receive(answer(tx.request, 180))
    ok = answer(tx.request, 200)
    stack.transport.receive(ok)
    assert tx.state is ACCEPTED
    assert (await tx.final).code == 200
    # RFC 6026 section 7.2: the ACK for a 2xx is the TU's, and every retransmitted 2xx
    # reaches the TU so it can ACK it again.
    assert stack.transport.requests("ACK") == []
    stack.transport.receive(ok)
    stack.transport.receive(ok)
    assert [r.code for r in responses] == [180, 200, 200, 200]
    sends = len(stack.transport.sent)
    await until(lambda: tx.state is TERMINATED)  # Timer M
    assert len(stack.transport.sent) == sends  # nothing retransmitted in Accepted
    assert tx.history == [CALLING, PROCEEDING, ACCEPTED, TERMINATED]


async def test_invite_client_2xx_without_provisional(stack: Stack) -> None:
    tx = stack.send("INVITE")
    stack.transport.receive(answer(tx.request, 200))
    assert (await tx.final).code == 200
    await until(lambda: tx.state is TERMINATED)
    assert tx.history == [CALLING, ACCEPTED, TERMINATED]


async def test_invite_client_ringing_outlives_timer_b(stack: Stack) -> None:
    """Section 17.1.1.2: Timer B only runs in Calling; a call may ring past 64*T1."""
    tx = stack.send("INVITE")
    stack.transport.receive(answer(tx.request, 180))
    await asyncio.sleep(TIMERS.timeout * 1.5)  # the timer under test must be seen not to fire
    assert tx.state is PROCEEDING and not tx.final.done()
    stack.transport.receive(answer(tx.request, 487))
    assert (await tx.final).code == 487
    await until(lambda: tx.state is TERMINATED)
    assert tx.history == [CALLING, PROCEEDING, COMPLETED, TERMINATED]


def cancel_for(invite: Request) -> Request:
    """Section 9.1: CANCEL copies the INVITE's Request-URI, top Via, From, To, Call-ID, Route."""
    cancel = Request(method="CANCEL", uri=invite.uri)
    cancel.headers.set("Via", invite.headers.getlist("Via")[0])
    for header in ("From", "To", "Call-ID"):
        cancel.headers.set(header, invite.headers[header])
    cancel.headers.set("CSeq", f"{invite.cseq.sequence} CANCEL")
    return cancel


async def test_cancelled_invite_without_final_response_gives_up_after_64_t1(stack: Stack) -> None:
    """Section 9.1: no final response 64*T1 after the CANCEL: the INVITE transaction ends.

    Without this, a peer that answers CANCEL with 200 but never sends the 487 would keep the
    INVITE transaction (and the call waiting for it) in Proceeding for ever.
    """
    tx = stack.send("INVITE")
    stack.transport.receive(answer(tx.request, 180))
    await asyncio.sleep(TIMERS.timeout / 2)  # ringing for a while first
    cancel_tx = stack.layer.send_request(cancel_for(tx.request), UDP_PEER)
    stack.transactions.append(cancel_tx)
    cancelled_at = asyncio.get_running_loop().time()
    stack.transport.receive(answer(cancel_tx.request, 200))
    stack.transport.receive(answer(tx.request, 180))  # a late provisional changes nothing
    with pytest.raises(TransactionTimeout):
        await asyncio.wait_for(tx.final, 2)
    assert asyncio.get_running_loop().time() - cancelled_at >= TIMERS.timeout - EARLY
    assert tx.history == [CALLING, PROCEEDING, TERMINATED]
    await until(lambda: cancel_tx.state is TERMINATED)


async def test_cancelled_invite_ends_normally_with_487(stack: Stack) -> None:
    tx = stack.send("INVITE")
    stack.transport.receive(answer(tx.request, 183))
    cancel_tx = stack.layer.send_request(cancel_for(tx.request), UDP_PEER)
    stack.transactions.append(cancel_tx)
    stack.transport.receive(answer(cancel_tx.request, 200))
    stack.transport.receive(answer(tx.request, 487))
    assert (await tx.final).code == 487
    assert stack.transport.requests("ACK")[0].message.cseq.method == "ACK"
    await until(lambda: stack.layer.active == 0)
    assert tx.history == [CALLING, PROCEEDING, COMPLETED, TERMINATED]
    assert cancel_tx.history == [TRYING, COMPLETED, TERMINATED]


async def test_invite_client_over_tcp_never_retransmits(stack: Stack) -> None:
    tx = stack.send("INVITE", peer=TCP_PEER)
    with pytest.raises(TransactionTimeout):
        await asyncio.wait_for(tx.final, 2)  # Timer B still applies
    assert len(stack.transport.requests("INVITE")) == 1
    assert stack.transport.sent[0].peer == TCP_PEER
    assert tx.history == [CALLING, TERMINATED]


async def test_invite_client_over_tcp_timer_d_is_zero(slow_stack: Stack) -> None:
    stack = slow_stack
    tx = stack.send("INVITE", peer=TCP_PEER)
    stack.transport.receive(answer(tx.request, 603), TCP_PEER)
    assert (await tx.final).code == 603
    assert stack.transport.requests("ACK")[0].peer == TCP_PEER
    await until(lambda: tx.state is TERMINATED, timeout=1.0)  # Timer D would be 32 s
    assert tx.history == [CALLING, COMPLETED, TERMINATED]
    assert len(stack.transport.requests("INVITE")) == 1


async def test_invite_client_abort(stack: Stack) -> None:
    tx = stack.send("INVITE")
    tx.abort()
    with pytest.raises(TransactionTimeout, match="aborted"):
        await tx.final
    assert tx.history == [CALLING, TERMINATED]


# --- non-INVITE client transaction (section 17.1.2) -------------------------------------------


async def test_non_invite_client_timer_e_is_capped_at_t2(stack: Stack) -> None:
    tx = stack.send("OPTIONS")
    assert tx.state is TRYING
    await until(lambda: len(stack.transport.requests("OPTIONS")) >= 8)
    gaps = intervals(stack.transport.requests("OPTIONS"))
    for index, expected in enumerate([0.01, 0.02, 0.04, 0.04, 0.04, 0.04, 0.04]):
        assert gaps[index] >= expected - EARLY, gaps
    # Uncapped, the later gaps would be 0.08, 0.16, 0.32 s.
    later = sorted(gaps[3:])
    assert later[len(later) // 2] < 0.07, gaps
    stack.transport.receive(answer(tx.request, 200))
    assert (await tx.final).code == 200
    await until(lambda: tx.state is TERMINATED)


async def test_non_invite_client_provisional_then_timer_f(stack: Stack) -> None:
    responses: list[Response] = []
    tx = stack.send("BYE", on_response=responses.append)
    stack.transport.receive(answer(tx.request, 100, to_tag=""))
    assert tx.state is PROCEEDING
    before = len(stack.transport.requests("BYE"))
    # Section 17.1.2.2: in Proceeding the request is still retransmitted, every T2.
    await until(lambda: len(stack.transport.requests("BYE")) >= before + 3)
    gaps = intervals(stack.transport.requests("BYE")[before:])
    assert all(gap >= TIMERS.t2 - EARLY for gap in gaps), gaps
    with pytest.raises(TransactionTimeout):
        await asyncio.wait_for(tx.final, 2)  # Timer F
    assert tx.history == [TRYING, PROCEEDING, TERMINATED]
    assert [r.code for r in responses] == [100]


async def test_non_invite_client_timer_k(stack: Stack) -> None:
    responses: list[Response] = []
    tx = stack.send("BYE", on_response=responses.append)
    ok = answer(tx.request, 200)
    stack.transport.receive(ok)
    assert tx.state is COMPLETED
    assert (await tx.final).code == 200
    count = len(stack.transport.requests("BYE"))
    stack.transport.receive(ok)  # absorbed in Completed
    assert len(responses) == 1
    completed_at = asyncio.get_running_loop().time()
    await until(lambda: tx.state is TERMINATED)
    elapsed = asyncio.get_running_loop().time() - completed_at
    assert TIMERS.t4 - EARLY <= elapsed < TIMERS.timeout  # Timer K is T4, not 64*T1
    assert len(stack.transport.requests("BYE")) == count
    assert tx.history == [TRYING, COMPLETED, TERMINATED]
    assert stack.transport.requests("ACK") == []  # no ACK outside INVITE


async def test_non_invite_client_over_tcp(slow_stack: Stack) -> None:
    stack = slow_stack
    tx = stack.send("OPTIONS", peer=TCP_PEER)
    stack.transport.receive(answer(tx.request, 404), TCP_PEER)
    assert (await tx.final).code == 404
    await until(lambda: tx.state is TERMINATED, timeout=1.0)  # Timer K is zero, not T4
    assert len(stack.transport.requests("OPTIONS")) == 1
    assert tx.history == [TRYING, COMPLETED, TERMINATED]


# --- INVITE server transaction (section 17.2.1) -----------------------------------------------


async def test_invite_server_non_2xx_timer_g_until_ack_then_timer_i(stack: Stack) -> None:
    invite = incoming("INVITE", "z9hG4bKsrv1")
    stack.transport.receive(invite)
    assert len(stack.requests) == 1
    request, peer, _ = stack.requests[0]
    tx = stack.server()
    assert request.method == "INVITE" and peer == UDP_PEER
    assert tx.state is PROCEEDING
    # A 100 at once, without a To tag, so the client stops retransmitting.
    trying = stack.transport.responses()
    assert [s.message.code for s in trying] == [100]
    assert isinstance(trying[0].message, Response)
    assert sipmsg.tag_of(trying[0].message.to_address) is None
    # A retransmitted INVITE is absorbed (not passed up) and the last response re-sent.
    stack.transport.receive(invite)
    assert len(stack.requests) == 1
    assert [s.message.code for s in stack.transport.responses()] == [100, 100]
    tx.respond_code(180)
    stack.transport.receive(invite)
    assert [s.message.code for s in stack.transport.responses()][-2:] == [180, 180]
    tx.respond_code(486)
    assert tx.state is COMPLETED
    await until(lambda: len(stack.transport.responses(486)) >= 5)
    busy = stack.transport.responses(486)
    assert isinstance(busy[0].message, Response)
    assert sipmsg.tag_of(busy[0].message.to_address) == tx.to_tag
    gaps = intervals(busy)
    for index, expected in enumerate([0.01, 0.02, 0.04, 0.04]):  # Timer G, capped at T2
        assert gaps[index] >= expected - EARLY, gaps
    # The ACK for a non-2xx has the INVITE's branch and ends the retransmissions.
    ack = incoming("ACK", "z9hG4bKsrv1")
    ack.headers.set("To", str(busy[0].message.to_address))
    stack.transport.receive(ack)
    assert tx.state is CONFIRMED
    assert tx.acked.done() and not tx.acked.cancelled()
    assert len(stack.requests) == 1  # the ACK belongs to the transaction
    count = len(stack.transport.responses(486))
    stack.transport.receive(ack)  # absorbed in Confirmed
    await until(lambda: tx.state is TERMINATED)  # Timer I
    assert len(stack.transport.responses(486)) == count
    assert tx.history == [PROCEEDING, COMPLETED, CONFIRMED, TERMINATED]


async def test_invite_server_timer_h_without_ack(stack: Stack) -> None:
    stack.transport.receive(incoming("INVITE", "z9hG4bKsrv2"))
    tx = stack.server()
    tx.respond_code(480)
    await until(lambda: tx.state is TERMINATED)
    assert tx.history == [PROCEEDING, COMPLETED, TERMINATED]
    assert tx.acked.cancelled()
    assert len(stack.transport.responses(480)) >= 5  # retransmitted until Timer H


async def test_invite_server_over_tcp(slow_stack: Stack) -> None:
    stack = slow_stack
    invite = incoming("INVITE", "z9hG4bKsrv3")
    stack.transport.receive(invite, TCP_PEER)
    tx = stack.server()
    tx.respond_code(486)
    assert stack.transport.responses(486)[0].peer == TCP_PEER
    # Over TCP there is no Timer G: the 486 is sent once, however long the ACK takes.
    await asyncio.sleep(Timers().t1 * 1.2)  # past where Timer G would first fire
    stack.transport.receive(incoming("ACK", "z9hG4bKsrv3"), TCP_PEER)
    await until(lambda: tx.state is TERMINATED, timeout=1.0)  # Timer I is zero, not T4
    assert len(stack.transport.responses(486)) == 1
    assert tx.history == [PROCEEDING, COMPLETED, CONFIRMED, TERMINATED]


async def test_invite_server_2xx_accepted_and_ack_goes_to_the_tu(stack: Stack) -> None:
    invite = incoming("INVITE", "z9hG4bKsrv4")
    stack.transport.receive(invite)
    tx = stack.server()
    tx.respond(sipmsg.make_response(invite, 200, to_tag=tx.to_tag))
    assert tx.state is ACCEPTED
    sends = len(stack.transport.sent)
    # RFC 6026 section 8: in Accepted, retransmitted INVITEs are absorbed (the TU re-sends
    # the 2xx) and ACKs go up to the TU, outside any transaction.
    stack.transport.receive(invite)
    assert len(stack.transport.sent) == sends
    assert len(stack.requests) == 1
    ack = incoming("ACK", "z9hG4bKack-new-branch")
    ack.headers.set("To", f"<sip:bob@127.0.0.1>;tag={tx.to_tag}")
    stack.transport.receive(ack)
    same_branch_ack = incoming("ACK", "z9hG4bKsrv4")
    stack.transport.receive(same_branch_ack)
    assert [(r.method, t) for r, _, t in stack.requests[1:]] == [("ACK", None), ("ACK", None)]
    assert tx.state is ACCEPTED
    await until(lambda: tx.state is TERMINATED)  # Timer L
    assert len(stack.transport.sent) == sends  # the transaction never retransmits a 2xx
    assert tx.history == [PROCEEDING, ACCEPTED, TERMINATED]
    assert tx.acked.cancelled()


async def test_invite_server_late_response_is_dropped(stack: Stack) -> None:
    stack.transport.receive(incoming("INVITE", "z9hG4bKsrv5"))
    tx = stack.server()
    tx.respond_code(486)
    tx.respond_code(200)  # too late: the transaction is Completed
    assert stack.transport.responses(200) == []
    stack.transport.receive(incoming("ACK", "z9hG4bKsrv5"))
    await until(lambda: tx.state is TERMINATED)


# --- non-INVITE server transaction (section 17.2.2) -------------------------------------------


async def test_non_invite_server_absorbs_retransmissions_then_timer_j(stack: Stack) -> None:
    options = incoming("OPTIONS", "z9hG4bKsrv6")
    stack.transport.receive(options)
    tx = stack.server()
    assert tx.state is TRYING
    assert stack.transport.sent == []  # no 100 for non-INVITE
    stack.transport.receive(options)  # Trying: nothing to re-send yet
    assert stack.transport.sent == [] and len(stack.requests) == 1
    tx.respond_code(200)
    assert tx.state is COMPLETED
    stack.transport.receive(options)
    stack.transport.receive(options)
    assert [s.message.code for s in stack.transport.responses()] == [200, 200, 200]
    assert len(stack.requests) == 1
    completed_at = asyncio.get_running_loop().time()
    await until(lambda: tx.state is TERMINATED)
    assert asyncio.get_running_loop().time() - completed_at >= TIMERS.timeout - 0.05
    assert len(stack.transport.responses()) == 3  # final responses are never retransmitted
    assert tx.history == [TRYING, COMPLETED, TERMINATED]


async def test_non_invite_server_provisional(stack: Stack) -> None:
    bye = incoming("BYE", "z9hG4bKsrv7")
    stack.transport.receive(bye)
    tx = stack.server()
    tx.respond_code(100)
    assert tx.state is PROCEEDING
    stack.transport.receive(bye)
    assert [s.message.code for s in stack.transport.responses()] == [100, 100]
    tx.respond_code(200)
    await until(lambda: tx.state is TERMINATED)
    assert tx.history == [TRYING, PROCEEDING, COMPLETED, TERMINATED]


async def test_non_invite_server_over_tcp_timer_j_is_zero(slow_stack: Stack) -> None:
    stack = slow_stack
    stack.transport.receive(incoming("OPTIONS", "z9hG4bKsrv8"), TCP_PEER)
    tx = stack.server()
    tx.respond_code(200)
    await until(lambda: tx.state is TERMINATED, timeout=1.0)  # Timer J would be 32 s
    assert tx.history == [TRYING, COMPLETED, TERMINATED]


async def test_without_a_transaction_user_requests_get_503(stack: Stack) -> None:
    stack.layer.on_request = None
    stack.transport.receive(incoming("OPTIONS", "z9hG4bKsrv9"))
    assert [s.message.code for s in stack.transport.responses()] == [503]
    await until(lambda: stack.layer.active == 0)


# --- matching (sections 17.1.3 and 17.2.3) ----------------------------------------------------


async def test_responses_are_matched_by_branch_and_cseq_method(stack: Stack) -> None:
    got: dict[str, list[int]] = {"first": [], "second": [], "cancel": []}
    first = stack.send("INVITE", on_response=lambda r: got["first"].append(r.code))
    second = stack.send("INVITE", on_response=lambda r: got["second"].append(r.code))
    assert sipmsg.branch_of(first.request) != sipmsg.branch_of(second.request)
    # A CANCEL shares the INVITE's branch (section 9.1): the CSeq method tells them apart.
    cancel = cancel_for(first.request)
    cancel_tx = stack.layer.send_request(cancel, UDP_PEER, lambda r: got["cancel"].append(r.code))
    stack.transactions.append(cancel_tx)
    assert sipmsg.branch_of(cancel_tx.request) == sipmsg.branch_of(first.request)
    assert stack.layer.active == 3
    stack.transport.receive(answer(second.request, 180))
    stack.transport.receive(answer(first.request, 180))
    stack.transport.receive(answer(cancel, 200))
    stack.transport.receive(answer(first.request, 487))
    stack.transport.receive(answer(second.request, 200))
    assert got == {"first": [180, 487], "second": [180, 200], "cancel": [200]}
    await until(lambda: stack.layer.active == 0)


async def test_stray_responses_go_to_the_stray_handler(stack: Stack) -> None:
    strays: list[tuple[int, Peer]] = []
    stack.layer.on_stray_response = lambda response, peer: strays.append((response.code, peer))
    tx = stack.send("OPTIONS")
    other_branch = answer(tx.request, 200)
    other_branch.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKunknown")
    stack.transport.receive(other_branch)
    wrong_method = answer(tx.request, 200)
    wrong_method.headers.set("CSeq", f"{tx.request.cseq.sequence} INFO")
    stack.transport.receive(wrong_method)
    assert strays == [(200, UDP_PEER), (200, UDP_PEER)]
    assert tx.state is TRYING
    stack.transport.receive(answer(tx.request, 200))
    await until(lambda: tx.state is TERMINATED)


async def test_ack_for_2xx_without_a_transaction_goes_up(stack: Stack) -> None:
    stack.transport.receive(incoming("ACK", "z9hG4bKlonely"))
    assert len(stack.requests) == 1
    request, peer, tx = stack.requests[0]
    assert (request.method, peer, tx) == ("ACK", UDP_PEER, None)
    assert stack.layer.active == 0  # an ACK never creates a server transaction
    assert stack.transport.sent == []


async def test_same_branch_different_method_is_a_new_server_transaction(stack: Stack) -> None:
    stack.transport.receive(incoming("INVITE", "z9hG4bKshared"))
    invite_tx = stack.server()
    stack.transport.receive(incoming("CANCEL", "z9hG4bKshared"))
    cancel_tx = stack.server()
    assert invite_tx is not cancel_tx
    assert stack.layer.find_server("z9hG4bKshared", "INVITE") is invite_tx
    assert stack.layer.find_server("z9hG4bKshared", "CANCEL") is cancel_tx
    cancel_tx.respond_code(200)
    invite_tx.respond_code(487)
    stack.transport.receive(incoming("ACK", "z9hG4bKshared"))
    await until(lambda: stack.layer.active == 0)
    assert [r.method for r, _, _ in stack.requests] == ["INVITE", "CANCEL"]


async def test_layer_adds_via_and_keeps_a_given_one(stack: Stack) -> None:
    tx = stack.send("OPTIONS", peer=TCP_PEER)
    via = tx.request.via[0]
    assert (via.transport, via.host, via.port) == ("TCP", "127.0.0.1", 5070)
    assert "rport" in via.parameters
    given = new_request("INFO")
    given.headers.set("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKgiven")
    tx2 = stack.layer.send_request(given, UDP_PEER)
    stack.transactions.append(tx2)
    assert tx2.branch == "z9hG4bKgiven"
    assert str(stack.layer.contact_for("alice", TCP_PEER).uri).endswith(";transport=tcp")
    await stack.layer.close()  # aborts both
    for client in (tx, tx2):
        with pytest.raises(TransactionTimeout):
            await client.final
