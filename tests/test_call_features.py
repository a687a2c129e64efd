"""In-call features against sipp: hold both ways, DTMF both ways (SIP INFO and RFC 4733),
blind transfer out (REFER/NOTIFY) and in (when the account allows it), session timers and
the RTP watchdog. Each test checks the page's messages and sipp's trace."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
from sipmessage import URI

from gateway.calls.call import CallState
from gateway.config import Trunk, parse_trunk
from gateway.media import rtp
from gateway.media.dtmf import DtmfReceiver
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.sipp import SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient
from tests.test_inbound_calls import (
    CallWatch,
    alice_gateway,
    assert_released,
    dial,
    pages,
    sdp_of,
)

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]


@asynccontextmanager
async def gateway_to(uas: SippUas, **changes: Any) -> AsyncIterator[RunningGateway]:
    trunk = parse_trunk(f"sip:127.0.0.1:{uas.port}")
    async with running_gateway(gateway_config(trunk=trunk, **changes)) as running:
        yield running


async def connected_call(client: WebRtcClient, to: str = "100") -> str:
    call_id = await client.call(to)
    await client.expect("ringing")
    await client.accept_answer(await client.expect("answer"))
    return call_id


def only_call(running: RunningGateway) -> Any:
    (session,) = running.gateway.sessions
    (call,) = session.calls.values()
    return call


def response_to(messages: list[str], cseq: str) -> str:
    """The first message in `messages` with this CSeq line (e.g. "2 INVITE")."""
    return next(m for m in messages if f"CSeq: {cseq}" in m)


# --- hold -------------------------------------------------------------------------


async def test_far_end_holds_and_resumes() -> None:
    async with alice_gateway() as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_hold", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            held = await page.expect("held", timeout=10)
            assert held == {"type": "held", "id": incoming["id"], "held": True, "by": "remote"}
            resumed = await page.expect("held", timeout=10)
            assert (resumed["held"], resumed["by"]) == (False, "remote")
            hangup = await page.expect("hangup", timeout=10)
            assert hangup["by"] == "remote"
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
    oks = uac.received("SIP/2.0 200")
    assert "a=sendrecv" in sdp_of(response_to(oks, "1 INVITE"))
    hold_answer = sdp_of(response_to(oks, "2 INVITE"))
    assert "a=recvonly" in hold_answer and "a=sendrecv" not in hold_answer
    resume_answer = sdp_of(response_to(oks, "3 INVITE"))
    assert "a=sendrecv" in resume_answer
    # RFC 3264 section 8: each new answer bumps the o= version of the same session.
    versions = [
        sdp_of(response_to(oks, f"{n} INVITE")).split("o=", 1)[1].split()[2] for n in (1, 2, 3)
    ]
    assert [int(v) for v in versions] == sorted(int(v) for v in versions)
    assert len(set(versions)) == 3


async def test_page_holds_and_resumes() -> None:
    async with SippUas("uas_hold_answer") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await connected_call(client)
            await client.send({"type": "hold", "id": call_id})
            held = await client.expect("held")
            assert held == {"type": "held", "id": call_id, "held": True, "by": "local"}
            await client.send({"type": "unhold", "id": call_id})
            resumed = await client.expect("held")
            assert (resumed["held"], resumed["by"]) == (False, "local")
            assert only_call(running).state is CallState.CONNECTED
            await client.send({"type": "hangup", "id": call_id})
            assert (await client.expect("hangup"))["by"] == "local"
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    invites = uas.received("INVITE")
    assert len(invites) == 3
    assert "a=sendonly" in sdp_of(invites[1])
    assert "a=sendrecv" in sdp_of(invites[2])
    assert len(uas.received("ACK")) == 3 and uas.received("BYE")


# --- DTMF -------------------------------------------------------------------------


async def test_digits_from_the_far_end_by_info_and_rfc4733() -> None:
    async with alice_gateway() as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_dtmf", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            info_digit = await page.expect("dtmf", timeout=10)
            assert info_digit == {"type": "dtmf", "id": incoming["id"], "digit": "5"}
            rtp_digit = await page.expect("dtmf", timeout=10)
            assert rtp_digit == {"type": "dtmf", "id": incoming["id"], "digit": "1"}
            await page.expect("hangup", timeout=10)
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
        # The pcap repeats its end packet three times: still one digit.
        assert [m["digit"] for m in page.messages if m["type"] == "dtmf"] == ["5", "1"]
    assert response_to(uac.received("SIP/2.0 200"), "2 INFO")


async def test_digits_from_the_page_as_info_when_no_telephone_event() -> None:
    async with SippUas("uas_dtmf_info") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await connected_call(client)
            await client.send({"type": "dtmf", "id": call_id, "digits": "1#"})
            async with asyncio.timeout(10):
                while len(uas.received("INFO")) < 2:
                    await asyncio.sleep(0.05)
            await client.send({"type": "hangup", "id": call_id})
            await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    infos = uas.received("INFO")
    assert [sdp_of(m).split("\r\n")[0] for m in infos] == ["Signal=1", "Signal=#"]
    assert all("Content-Type: application/dtmf-relay" in m for m in infos)
    assert not [m for m in client.messages if m["type"] == "error"]


class RtpCapture(asyncio.DatagramProtocol):
    """The SIP peer's media, played by the test: keeps every RTP packet it is sent."""

    def __init__(self) -> None:
        self.packets: list[rtp.RtpHeader] = []

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if not rtp.is_rtcp(data):
            self.packets.append(rtp.parse(data))


async def test_digits_from_the_page_as_rfc4733_events() -> None:
    loop = asyncio.get_running_loop()
    transport, capture = await loop.create_datagram_endpoint(
        RtpCapture, local_addr=("127.0.0.1", 0)
    )
    te_pt = 100  # not the usual 101: the gateway must use what the SDP says
    try:
        port = transport.get_extra_info("sockname")[1]
        keys = {"rtp_ip": "127.0.0.1", "rtp_port": str(port), "te_pt": str(te_pt)}
        async with (
            SippUas("uas_answer_media_at", keys=keys, rtp_echo=False) as uas,
            gateway_to(uas) as running,
            WebRtcClient(running.ws_url) as client,
        ):
            call_id = await connected_call(client)
            await client.send({"type": "dtmf", "id": call_id, "digits": "19"})

            def events() -> list[rtp.RtpHeader]:
                return [p for p in capture.packets if p.payload_type == te_pt]

            async with asyncio.timeout(10):
                while sum(1 for p in events() if p.payload[1] & 0x80) < 6:
                    await asyncio.sleep(0.05)
            await client.send({"type": "hangup", "id": call_id})
            await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()
            await assert_released(running)
    finally:
        transport.close()
    packets = events()
    receiver = DtmfReceiver(8000)
    digits = [d for p in packets if (d := receiver.receive(p.timestamp, p.marker, p.payload))]
    assert digits == ["1", "9"]
    assert not uas.received("INFO")  # RFC 4733 only, no INFO as well
    # RFC 4733 layout: 4-byte payloads; per event one timestamp, the marker on its first
    # packet, durations that grow, and the end bit on the last three (section 2.5.1.4).
    audio_ssrc = {p.ssrc for p in capture.packets if p.payload_type == 0}
    for code in (1, 9):
        event = [p for p in packets if p.payload[0] == code]
        assert all(len(p.payload) == 4 for p in event)
        assert len({p.timestamp for p in event}) == 1
        assert [p.marker for p in event] == [True] + [False] * (len(event) - 1)
        ends = [bool(p.payload[1] & 0x80) for p in event]
        assert ends[-3:] == [True] * 3 and not any(ends[:-3])
        durations = [int.from_bytes(p.payload[2:4], "big") for p in event]
        assert durations == sorted(durations) and durations[0] > 0
        assert {p.ssrc for p in event} <= audio_ssrc or not audio_ssrc


# --- transfer out -------------------------------------------------------------------


async def test_blind_transfer_from_the_page() -> None:
    async with SippUas("uas_refer") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await connected_call(client)
            await client.send({"type": "transfer", "id": call_id, "to": "200"})
            states: list[str] = []
            while not states or states[-1] not in ("done", "failed"):
                states.append((await client.expect("transfer"))["state"])
            assert states == ["trying", "accepted", "done"]
            hangup = await client.expect("hangup")
            assert hangup == {
                "type": "hangup",
                "id": call_id,
                "code": 200,
                "reason": "Transferred",
                "by": "local",
            }
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    (refer,) = uas.received("REFER")
    # The account's domain (the trunk host here), so the far end routes it as its own.
    assert "Refer-To: <sip:200@127.0.0.1" in refer
    assert response_to(uas.received("SIP/2.0 200"), "1 NOTIFY")
    assert uas.received("BYE")


async def test_refused_transfer_keeps_the_call() -> None:
    async with SippUas("uas_refer_refused") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url, tone=1000) as client:
            call_id = await connected_call(client)
            await client.send({"type": "transfer", "id": call_id, "to": "200"})
            assert (await client.expect("transfer"))["state"] == "trying"
            failed = await client.expect("transfer")
            assert (failed["state"], failed["code"]) == ("failed", 403)
            assert only_call(running).state is CallState.CONNECTED
            assert abs(await client.wait_for_tone(1000) - 1000) < 20  # audio still flows
            await client.send({"type": "hangup", "id": call_id})
            hangup = await client.expect("hangup")
            assert (hangup["code"], hangup["by"]) == (200, "local")
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    assert uas.received("BYE")


# --- transfer in --------------------------------------------------------------------


def account(*, allow_refer: bool, redirect: str = "user", port: int = 9) -> Trunk:
    # A carrier account on 127.0.0.1: the gateway takes sipp's INVITE as coming through it.
    return Trunk(
        uri=URI.parse(f"sip:127.0.0.1:{port}"),
        name="carrier",
        allow_refer=allow_refer,
        redirect=redirect,
    )


@pytest.mark.parametrize("accounts", [(), (account(allow_refer=False),)], ids=["none", "denied"])
async def test_incoming_refer_refused_unless_allowed(accounts: tuple[Trunk, ...]) -> None:
    async with alice_gateway(accounts=accounts) as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_refer_refused", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            hangup = await page.expect("hangup", timeout=10)
            assert (hangup["code"], hangup["by"]) == (200, "remote")  # the caller's BYE
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
        assert not [m for m in page.messages if m["type"] in ("transfer", "transferred")]
    assert response_to(uac.received("SIP/2.0 403"), "2 REFER")
    assert not uac.received("NOTIFY")


async def test_incoming_refer_is_followed_when_allowed() -> None:
    async with (
        SippUas("uas_answer_wait_bye") as target,
        # redirect="uri": the Refer-To's own host is followed (since issue 11 that takes an
        # explicit setting; by default its user part is routed through the account).
        alice_gateway(accounts=(account(allow_refer=True, redirect="uri"),)) as running,
        AsyncExitStack() as stack,
    ):
        (page,) = await pages(running, 1, stack)
        keys = {"refer_to": f"sip:bob@127.0.0.1:{target.port}"}
        # The caller does not echo; the transfer target does: the tone is heard only after.
        async with dial(running, "uac_inbound_refer", keys=keys) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            transferred = await page.expect("transferred", timeout=10)
            assert transferred["to"] == keys["refer_to"]
            assert abs(await page.wait_for_tone(1000) - 1000) < 20
            assert await uac.wait(timeout=10) == 0, uac.summary()
            assert only_call(running).state is CallState.CONNECTED
            await page.send({"type": "hangup", "id": incoming["id"]})
            assert (await page.expect("hangup"))["by"] == "local"
            assert await target.wait(timeout=10) == 0, target.summary()
        await assert_released(running)
    assert uac.received("SIP/2.0 202")
    notifies = uac.received("NOTIFY")
    assert [sdp_of(n).strip() for n in notifies] == ["SIP/2.0 100 Trying", "SIP/2.0 200 OK"]
    assert all("Event: refer" in n and "message/sipfrag" in n for n in notifies)
    assert "Subscription-State: terminated" in notifies[-1]
    assert uac.received("BYE")
    (invite,) = target.received("INVITE")
    assert invite.startswith(f"INVITE sip:bob@127.0.0.1:{target.port}")


# --- session timer and RTP watchdog -------------------------------------------------


async def test_session_timer_requested_by_the_caller() -> None:
    with CallWatch():
        async with alice_gateway() as running, AsyncExitStack() as stack:
            (page,) = await pages(running, 1, stack)
            async with dial(running, "uac_inbound_session_timer", rtp_echo=True) as uac:
                incoming = await page.expect("incoming")
                await page.answer_incoming(incoming)
                await page.expect("answer")
                await page.expect("hangup", timeout=10)
                assert await uac.wait(timeout=10) == 0, uac.summary()
            await assert_released(running)
    ok = response_to(uac.received("SIP/2.0 200"), "1 INVITE")
    headers = ok.split("\r\n\r\n", 1)[0].split("\r\n")
    assert "Session-Expires: 90;refresher=uas" in headers
    assert "Require: timer" in headers


async def test_rtp_timeout_ends_the_call() -> None:
    async with SippUas("uas_answer_wait_bye", rtp_echo=False) as uas:
        async with gateway_to(uas, rtp_timeout=2.0) as running:
            async with WebRtcClient(running.ws_url) as client:
                call_id = await connected_call(client)
                started = asyncio.get_running_loop().time()
                hangup = await client.expect("hangup", timeout=10)
                waited = asyncio.get_running_loop().time() - started
                assert hangup == {
                    "type": "hangup",
                    "id": call_id,
                    "code": 408,
                    "reason": "Media timeout (no RTP)",
                    "by": "gateway",
                }
                assert 1.5 < waited < 5.0
                assert await uas.wait(timeout=10) == 0, uas.summary()
            await assert_released(running)
    assert uas.received("BYE")


async def test_session_refreshed_by_the_gateway_when_it_is_the_refresher() -> None:
    async with alice_gateway(min_session_expires=4) as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_session_refresh", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            # sipp hangs up only after our refresh re-INVITE arrived within its 4 s wait.
            await page.expect("hangup", timeout=10)
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
    ok = response_to(uac.received("SIP/2.0 200"), "1 INVITE")
    assert "Session-Expires: 4;refresher=uas" in ok
    (refresh,) = uac.received("INVITE ")  # the refresh: our first request in the dialog
    assert "CSeq: 1 INVITE" in refresh and "Session-Expires: 4;refresher=uac" in refresh


async def test_session_interval_below_min_se_gets_422() -> None:
    async with alice_gateway(min_session_expires=120) as running, AsyncExitStack() as stack:
        await pages(running, 1, stack)
        async with dial(running, "uac_inbound_session_timer", rtp_echo=True) as uac:
            await uac.wait(timeout=10)
        await assert_released(running)
    (rejected,) = uac.received("SIP/2.0 422")
    assert "Min-SE: 120" in rejected
