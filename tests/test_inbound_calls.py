"""Inbound calls: sipp dials a browser user's extension at the gateway's SIP port and the
pages of that user ring (protocol: `incoming`, `accept`, `reject`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest

from gateway.calls.call import CallState
from gateway.calls.inbound import InboundCall
from gateway.config import User
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.sipp import SippUac, sipp_available
from tests.support.webrtc_client import WebRtcClient

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]

ALICE = User(name="alice", extension="1001")


@asynccontextmanager
async def alice_gateway(**changes: Any) -> AsyncIterator[RunningGateway]:
    """A gateway with one user, alice at extension 1001, and no password."""
    config = gateway_config(users=(ALICE,), **changes)
    async with running_gateway(config) as running:
        yield running


def dial(running: RunningGateway, scenario: str, to: str = "1001", **options: Any) -> SippUac:
    return SippUac(scenario, target=f"127.0.0.1:{running.gateway.sip_port}", service=to, **options)


async def assert_released(running: RunningGateway) -> None:
    """RTP ports and dialogs come back once the call is over (and transactions time out)."""
    gateway = running.gateway
    async with asyncio.timeout(10):
        while gateway.ports.in_use or gateway.ua.dialog_count or gateway.ua.tl.active:
            await asyncio.sleep(0.05)


class CallWatch:
    """Keeps every inbound call the gateway makes, so a test can read its state history."""

    def __init__(self) -> None:
        self.calls: list[InboundCall] = []
        self._original = InboundCall.__init__

    def __enter__(self) -> CallWatch:
        watch = self
        original = self._original

        def init(call: InboundCall, *args: Any, **kwargs: Any) -> None:
            original(call, *args, **kwargs)
            watch.calls.append(call)

        InboundCall.__init__ = init  # type: ignore[method-assign, assignment]
        return self

    def __exit__(self, *exc: object) -> None:
        InboundCall.__init__ = self._original  # type: ignore[method-assign]

    @property
    def only(self) -> InboundCall:
        assert len(self.calls) == 1, self.calls
        return self.calls[0]


async def pages(running: RunningGateway, count: int, stack: AsyncExitStack) -> list[WebRtcClient]:
    clients = []
    for _ in range(count):
        client = WebRtcClient(running.ws_url, tone=1000, user="alice")
        clients.append(await stack.enter_async_context(client))
    return clients


def sdp_of(message: str) -> str:
    return message.split("\r\n\r\n", 1)[1] if "\r\n\r\n" in message else ""


CONNECTED = [
    CallState.NEW,
    CallState.RINGING,
    CallState.ANSWERING,
    CallState.CONNECTED,
    CallState.ENDING,
    CallState.ENDED,
]


async def test_call_with_offer_is_answered_with_audio_and_caller_hangs_up() -> None:
    with CallWatch() as watch:
        async with alice_gateway() as running, AsyncExitStack() as stack:
            (page,) = await pages(running, 1, stack)
            assert page.welcome["user"] == "alice" and page.welcome["extension"] == "1001"
            async with dial(running, "uac_inbound_call", rtp_echo=True) as uac:
                incoming = await page.expect("incoming")
                assert (incoming["from"], incoming["fromName"]) == ("2000", "Bob")
                await page.answer_incoming(incoming)
                answer = await page.expect("answer")
                assert answer == {"type": "answer", "id": incoming["id"]}
                # sipp echoes our RTP: the page's tone went page -> gateway -> sipp and back.
                heard = await page.wait_for_tone(1000)
                assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz"
                hangup = await page.expect("hangup", timeout=10)
                assert (hangup["id"], hangup["by"]) == (incoming["id"], "remote")
                assert await uac.wait(timeout=10) == 0, uac.summary()
            await assert_released(running)
            assert watch.only.history == CONNECTED
    (ringing,) = uac.received("SIP/2.0 180")
    (ok,) = uac.received("SIP/2.0 200 OK")[:1]
    assert "To: <sip:1001@" in ok and ";tag=" in ringing
    body = sdp_of(ok)
    assert "m=audio " in body and " RTP/AVP 0" in body and "a=rtpmap:0 PCMU/8000" in body
    assert "telephone-event/8000" in body  # the caller offered it: DTMF by RFC 4733 works
    assert uac.messages().index("SIP/2.0 180") < uac.messages().index("SIP/2.0 200 OK")
    # Peers only send in-dialog requests the Allow header lists: all that the gateway handles.
    allow = next(line for line in ok.split("\r\n") if line.startswith("Allow:"))
    assert {"INFO", "UPDATE", "REFER", "NOTIFY"} <= {m.strip() for m in allow[6:].split(",")}


async def test_late_offer_is_made_in_the_200_and_answered_in_the_ack() -> None:
    async with alice_gateway() as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_late_offer", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            heard = await page.wait_for_tone(1000)
            assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz"
            hangup = await page.expect("hangup", timeout=10)
            assert hangup["by"] == "remote"
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
    (invite,) = uac.sent("INVITE")
    assert "Content-Length: 0" in invite
    offer = sdp_of(uac.received("SIP/2.0 200 OK")[0])
    assert "a=rtpmap:0 PCMU/8000" in offer and "a=sendrecv" in offer
    assert "a=rtpmap:0 PCMU/8000" in sdp_of(uac.sent("ACK")[0])


async def test_caller_cancels_while_ringing() -> None:
    with CallWatch() as watch:
        async with alice_gateway() as running, AsyncExitStack() as stack:
            (page,) = await pages(running, 1, stack)
            async with dial(running, "uac_inbound_cancel") as uac:
                incoming = await page.expect("incoming")
                hangup = await page.expect("hangup", timeout=10)
                assert hangup == {
                    "type": "hangup",
                    "id": incoming["id"],
                    "code": 487,
                    "reason": "Cancelled by caller",
                    "by": "remote",
                }
                assert await uac.wait(timeout=10) == 0, uac.summary()
            await assert_released(running)
            history = watch.only.history
            assert history == [CallState.NEW, CallState.RINGING, CallState.ENDING, CallState.ENDED]
            # The page can no longer accept it.
            await page.answer_incoming(incoming)
            error = await page.expect("error")
            assert error["code"] == "no-such-call"
    assert len(uac.received("SIP/2.0 200")) == 1  # the CANCEL's
    assert len(uac.received("SIP/2.0 487")) == 1


async def test_two_pages_ring_first_accept_wins() -> None:
    with CallWatch() as watch:
        async with alice_gateway() as running, AsyncExitStack() as stack:
            first, second = await pages(running, 2, stack)
            async with dial(running, "uac_inbound_call", rtp_echo=True) as uac:
                incoming = [await first.expect("incoming"), await second.expect("incoming")]
                assert incoming[0]["id"] == incoming[1]["id"]
                await second.answer_incoming(incoming[1])
                await second.expect("answer")
                elsewhere = await first.expect("hangup")
                assert elsewhere == {
                    "type": "hangup",
                    "id": incoming[0]["id"],
                    "code": 200,
                    "reason": "Answered elsewhere",
                    "by": "remote",
                }
                # Too late for the first page now.
                await first.answer_incoming(incoming[0])
                assert (await first.expect("error"))["code"] in ("no-such-call", "bad-state")
                assert abs(await second.wait_for_tone(1000) - 1000) < 20
                hangup = await second.expect("hangup", timeout=10)
                assert hangup["by"] == "remote"
                assert await uac.wait(timeout=10) == 0, uac.summary()
            await assert_released(running)
            assert watch.only.history == CONNECTED
            assert [m["type"] for m in first.messages if m.get("id") == incoming[0]["id"]] == [
                "incoming",
                "hangup",
                "error",
            ]
    assert len(uac.received("SIP/2.0 200 OK")) >= 1


@pytest.mark.parametrize(("code", "expected"), [(None, 486), (603, 603)])
async def test_page_rejects(code: int | None, expected: int) -> None:
    async with alice_gateway() as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_rejected") as uac:
            incoming = await page.expect("incoming")
            await page.reject(incoming, code)
            hangup = await page.expect("hangup")
            assert (hangup["code"], hangup["by"]) == (expected, "local")
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
    assert uac.received("SIP/2.0 180")
    assert len(uac.received(f"SIP/2.0 {expected} ")) >= 1


async def test_nobody_online_gets_480_and_unknown_user_404() -> None:
    async with alice_gateway() as running:
        async with dial(running, "uac_inbound_rejected") as uac:
            assert await uac.wait(timeout=10) == 0, uac.summary()
        assert uac.received("SIP/2.0 480 ")
        async with AsyncExitStack() as stack:
            (page,) = await pages(running, 1, stack)
            async with dial(running, "uac_inbound_rejected", to="1999") as unknown:
                assert await unknown.wait(timeout=10) == 0, unknown.summary()
            assert unknown.received("SIP/2.0 404 ")
            assert not [m for m in page.messages if m["type"] == "incoming"]
        await assert_released(running)


async def test_ring_timeout_gives_the_caller_480() -> None:
    with CallWatch() as watch:
        async with alice_gateway(ring_timeout=1.5) as running, AsyncExitStack() as stack:
            (page,) = await pages(running, 1, stack)
            async with dial(running, "uac_inbound_rejected") as uac:
                incoming = await page.expect("incoming")
                started = asyncio.get_running_loop().time()
                hangup = await page.expect("hangup", timeout=10)
                waited = asyncio.get_running_loop().time() - started
                assert hangup["id"] == incoming["id"] and hangup["code"] == 480
                assert 1.0 < waited < 4.0
                assert await uac.wait(timeout=10) == 0, uac.summary()
            await assert_released(running)
            assert watch.only.history[-1] is CallState.ENDED
    assert uac.received("SIP/2.0 180") and uac.received("SIP/2.0 480 ")


async def test_an_ended_inbound_call_is_freed_while_its_invite_is_remembered() -> None:
    """The UA keeps the INVITE 64*T1 after its 2xx to match a late CANCEL; that must not
    keep the call, its peer connection and bridge alive as long."""
    import gc
    import weakref

    async with alice_gateway(sip_t1=0.5) as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        with CallWatch() as watch:
            async with dial(running, "uac_inbound_call", keys={"hold_ms": "300"}) as uac:
                await page.answer_incoming(await page.expect("incoming"))
                await page.expect("answer")
                await page.expect("hangup", timeout=10)
                assert await uac.wait(timeout=10) == 0, uac.summary()
            call = weakref.ref(watch.only)
            watch.calls.clear()
        assert running.gateway.ua._incoming  # still there for a late CANCEL
        async with asyncio.timeout(5):
            while call() is not None:
                await asyncio.sleep(0.2)
                gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, InboundCall)]
