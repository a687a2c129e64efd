"""The call drivers on a virtual clock, with fakes of the UA and of page sessions.

No network, no real time: the event loop's clock is a number the test moves, timers fire
when it passes them, and each step runs the loop for one turn (no sleeping)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
from sipmessage import URI, Request, Response

import sdp
from gateway.calls.call import Call, CallState, Route
from gateway.calls.outbound import OutboundCall
from gateway.calls.page import (
    Answer,
    Hangup,
    Held,
    Incoming,
    PageCall,
    PageMessage,
    Ringing,
    TransferProgress,
)
from gateway.calls.peer import PeerCall
from gateway.config import User, from_mapping
from gateway.media.ports import PortAllocator


class VirtualClock(asyncio.SelectorEventLoop):
    """An event loop whose time moves only when the test says so."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 1000.0

    def time(self) -> float:
        return self.now

    def turn(self) -> None:
        """Run what is ready now, timers due included."""

        async def nothing() -> None:
            return None

        for _ in range(5):  # a few turns: a task a timer starts runs, and what it spawns
            self.run_until_complete(nothing())

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.turn()

    def run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return self.run_until_complete(coro)

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        """A synchronous entry point (a page request, a SIP request), run as the gateway
        runs it: inside the event loop."""

        async def inside() -> Any:
            return function(*args)

        return self.run_until_complete(inside())


@pytest.fixture
def clock() -> Iterator[VirtualClock]:
    loop = VirtualClock()
    try:
        yield loop
    finally:
        loop.close()


class FakePage:
    """A page session: what it was told, and which calls it knows."""

    def __init__(self, name: str) -> None:
        self.id = name
        self.user: User | None = None
        self.peer = "127.0.0.1"
        self.told: list[PageMessage] = []
        self.calls: set[str] = set()

    def notify(self, message: PageMessage) -> None:
        self.told.append(message)

    def adopt(self, call: PageCall) -> None:
        self.calls.add(call.id)

    def release(self, call: PageCall) -> None:
        self.calls.discard(call.id)


def peer_call(clock: VirtualClock, callees: int = 2) -> tuple[PeerCall, FakePage, list[FakePage]]:
    caller, pages = FakePage("caller"), [FakePage(f"callee{i}") for i in range(callees)]

    async def make() -> PeerCall:
        return PeerCall(
            "peer-1",
            caller=caller,
            caller_user=User(name="alice", password="x", extension="100"),
            callee=User(name="bob", password="y"),
            sessions=list(pages),
            offer="v=0 offer",
            ring_timeout=30,
        )

    call = clock.run(make())
    clock.call(call.start)
    return call, caller, pages


def test_peer_call_rings_until_ring_timeout(clock: VirtualClock) -> None:
    call, caller, pages = peer_call(clock)
    assert pages[0].told == [Incoming("peer-1", "100", "v=0 offer")]
    assert caller.told == [Ringing("peer-1", 180)]
    clock.advance(29.9)
    assert call.state is CallState.RINGING
    clock.advance(0.2)
    assert call.history == [CallState.NEW, CallState.RINGING, CallState.ENDING, CallState.ENDED]
    assert caller.told[-1] == Hangup("peer-1", 480, "No answer", "remote")
    assert all(p.told[-1] == Hangup("peer-1", 480, "No answer", "remote") for p in pages)
    assert not any(p.calls for p in pages)


def test_peer_call_answered_then_hung_up_by_caller(clock: VirtualClock) -> None:
    call, caller, pages = peer_call(clock)
    clock.call(call.accept, pages[1], "v=0 answer")
    assert pages[0].told[-1] == Hangup("peer-1", 200, "Answered elsewhere", "remote")
    assert caller.told[-1] == Answer("peer-1", "v=0 answer")
    assert pages[1].told[-1] == Answer("peer-1")
    clock.advance(60)  # the ring timer was cancelled
    assert call.state is CallState.CONNECTED
    clock.call(call.hangup, caller)
    assert call.history[-3:] == [CallState.CONNECTED, CallState.ENDING, CallState.ENDED]
    assert caller.told[-1] == Hangup("peer-1", 200, "Remote party hung up", "local")
    assert pages[1].told[-1] == Hangup("peer-1", 200, "Remote party hung up", "remote")


def test_peer_call_last_page_gone(clock: VirtualClock) -> None:
    call, caller, pages = peer_call(clock, callees=1)
    clock.call(call.leave, pages[0])
    assert caller.told[-1] == Hangup("peer-1", 480, "bob is not online", "remote")
    assert call.state is CallState.ENDED


class FakeUA:
    """The UA's typed in-dialog methods, answering as the test says."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []
        self.reinvite_answer: Response | None = Response(200, "OK")
        self.refer_answer: Response | None = Response(202, "Accepted")

    async def reinvite(self, dialog: Any, body: bytes, headers: Any) -> Response | None:
        self.sent.append(("INVITE", dict(headers)))
        return self.reinvite_answer

    async def refer(self, dialog: Any, target: URI) -> Response | None:
        self.sent.append(("REFER", str(target)))
        return self.refer_answer

    async def bye(self, dialog: Any) -> None:
        self.sent.append(("BYE", dialog))


class FakeTx:
    def __init__(self) -> None:
        self.codes: list[int] = []

    def respond_code(self, code: int, reason: str | None = None) -> None:
        self.codes.append(code)


def connected_call(clock: VirtualClock) -> tuple[Call, FakeUA, list[PageMessage]]:
    ua, told = FakeUA(), []

    async def make() -> Call:
        call = Call(
            "sip-1",
            ua=ua,  # type: ignore[arg-type]
            config=from_mapping({}),
            ports=PortAllocator(40000, 40010),
            notify=told.append,
            account=None,
        )
        call._set_state(CallState.CALLING)
        call._set_state(CallState.CONNECTED)
        call._dialog = "dialog-1"  # type: ignore[assignment]
        call.media.codec = sdp.Codec("PCMU", 8000, 1, 0, "")
        call.media.port = 40000
        return call

    return clock.run(make()), ua, told


def two_xx(session_expires: str) -> Response:
    response = Response(200, "OK")
    response.headers.set("Session-Expires", session_expires)
    return response


def test_we_refresh_the_session_at_half_the_interval(clock: VirtualClock) -> None:
    call, ua, _ = connected_call(clock)
    clock.call(lambda: call._take_session_timer(two_xx("120;refresher=uac"), we_are_uac=True))
    clock.advance(59.9)
    assert ua.sent == []
    ua.reinvite_answer = two_xx("120;refresher=uac")
    clock.advance(0.2)
    assert ua.sent == [("INVITE", {"Supported": "timer", "Session-Expires": "120;refresher=uac"})]
    clock.advance(60)  # the 2xx to the refresh set the next one
    assert len(ua.sent) == 2 and call.state is CallState.CONNECTED


def test_a_session_nobody_refreshes_ends(clock: VirtualClock) -> None:
    call, ua, told = connected_call(clock)
    clock.call(lambda: call._take_session_timer(two_xx("120;refresher=uas"), we_are_uac=True))
    clock.advance(87.9)  # 120 - min(32, 40)
    assert call.state is CallState.CONNECTED
    clock.advance(0.2)
    assert told[-1] == Hangup("sip-1", 408, "Session expired (no refresh)", "gateway")
    assert ("BYE", "dialog-1") in ua.sent
    assert call.history[-2:] == [CallState.ENDING, CallState.ENDED]


def test_hold_then_refused_resume(clock: VirtualClock) -> None:
    call, ua, told = connected_call(clock)
    clock.run(call.hold(True))
    assert call.held_local and told == [Held("sip-1", True, "local")]
    ua.reinvite_answer = Response(488, "Not Acceptable Here")
    with pytest.raises(Exception, match="488"):
        clock.run(call.hold(False))
    assert call.held_local and call.media.direction == "sendonly"


def refer_notify(status: str) -> Request:
    request = Request("NOTIFY", URI.parse("sip:gw@127.0.0.1"), (status + "\r\n").encode())
    request.headers.set("Event", "refer")
    return request


def test_blind_transfer_to_done_ends_the_call(clock: VirtualClock) -> None:
    call, ua, told = connected_call(clock)
    clock.run(call.transfer("200", URI.parse("sip:200@pbx")))
    assert told == [TransferProgress("sip-1", "trying"), TransferProgress("sip-1", "accepted")]
    tx = FakeTx()
    clock.call(call.on_in_dialog_request, "dialog-1", refer_notify("SIP/2.0 180 Ringing"), tx)
    clock.call(call.on_in_dialog_request, "dialog-1", refer_notify("SIP/2.0 200 OK"), tx)
    clock.turn()
    assert tx.codes == [200, 200]
    assert TransferProgress("sip-1", "ringing", 180, "Ringing") in told
    assert TransferProgress("sip-1", "done", 200, "OK") in told
    assert told[-1] == Hangup("sip-1", 200, "Transferred", "local")
    assert ua.sent[-1] == ("BYE", "dialog-1")


def test_transfer_without_outcome_fails_after_its_wait(clock: VirtualClock) -> None:
    call, ua, told = connected_call(clock)
    clock.run(call.transfer("200", URI.parse("sip:200@pbx")))
    clock.advance(60 + 64 * 0.5 + 0.1)  # no_answer_timeout + 64*T1
    assert told[-1] == TransferProgress("sip-1", "failed", 408, "No transfer result")
    clock.run(call.transfer("201", URI.parse("sip:201@pbx")))  # and may be tried again
    assert ua.sent[-1] == ("REFER", "sip:201@pbx")


def test_hangup_while_the_rtp_port_opens_sends_no_invite(
    clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the transition table: the INVITE went out for a call already ended."""
    ua, told = FakeUA(), []

    async def make() -> tuple[OutboundCall, asyncio.Future[None]]:
        call = OutboundCall(
            "out-1",
            to="600",
            offer="v=0 offer",
            route=Route(URI.parse("sip:600@127.0.0.1"), None, None),  # type: ignore[arg-type]
            ua=ua,  # type: ignore[arg-type]
            config=from_mapping({}),
            ports=PortAllocator(40000, 40010),
            notify=told.append,
        )
        return call, asyncio.get_running_loop().create_future()

    call, port_opened = clock.run(make())

    async def open_port() -> Any:
        await port_opened
        return type("Media", (), {"port": 40000, "close": lambda self: None})()

    call._open_sip_media = open_port  # type: ignore[method-assign]
    clock.call(call.start)
    clock.turn()
    clock.call(call.hangup)
    clock.turn()
    clock.call(port_opened.set_result, None)
    clock.turn()
    assert call.history == [CallState.NEW, CallState.ENDING, CallState.ENDED]
    assert told == [Hangup("out-1", 200, "Hung up", "local")]
    assert "call failed" not in caplog.text and "impossible" not in caplog.text
