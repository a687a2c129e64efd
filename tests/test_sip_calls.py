"""Outbound calls through the gateway to sipp as the far SIP party, one scenario each."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.config import DialPlan, User, parse_trunk
from tests.support.gateway import RunningGateway, gateway_config, running_gateway
from tests.support.sipp import SippUac, SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]

CHROME_OFFER = (Path(__file__).parent / "sdp_corpus" / "chrome_offer_gathered.sdp").read_text()


@asynccontextmanager
async def gateway_to(uas: SippUas, **changes: object) -> AsyncIterator[RunningGateway]:
    trunk = parse_trunk(
        f"sip:127.0.0.1:{uas.port}",
        username=changes.pop("username", None),  # type: ignore[arg-type]
        password=changes.pop("password", None),  # type: ignore[arg-type]
    )
    async with running_gateway(gateway_config(trunk=trunk, **changes)) as running:
        yield running


async def assert_released(running: RunningGateway) -> None:
    """Every exit path gives back its RTP ports, dialogs and (after their timers) transactions."""
    gateway = running.gateway
    async with asyncio.timeout(10):
        while gateway.ports.in_use or gateway.ua.dialog_count or gateway.ua.tl.active:
            await asyncio.sleep(0.05)


async def connected_call(client: WebRtcClient, to: str = "100") -> str:
    call_id = await client.call(to)
    await client.expect("ringing")
    await client.accept_answer(await client.expect("answer"))
    return call_id


async def test_answered_call_audio_both_ways_and_browser_hangs_up() -> None:
    async with SippUas("uas_answer_wait_bye") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url, tone=1000) as client:
            call_id = await connected_call(client)
            # sipp echoes RTP: the tone made the trip browser -> SIP peer -> browser.
            heard = await client.wait_for_tone(1000)
            assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz through sipp's RTP echo"
            await client.send({"type": "hangup", "id": call_id})
            hangup = await client.expect("hangup")
            assert (hangup["code"], hangup["by"]) == (200, "local")
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    assert uas.received("BYE")


async def test_remote_party_hangs_up() -> None:
    async with SippUas("uas_answer_send_bye", keys={"bye_after": "1000"}) as uas:
        async with gateway_to(uas) as running, WebRtcClient(running.ws_url) as client:
            await connected_call(client)
            hangup = await client.expect("hangup", timeout=10)
            assert hangup["by"] == "remote"
            assert await uas.wait(timeout=10) == 0, uas.summary()
            await assert_released(running)
            # The state history of the call, not only its end.
            call = next(iter(running.gateway.sessions)).calls
            assert call == {}  # the session forgot the ended call


async def test_busy() -> None:
    async with SippUas("uas_busy") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            await client.call("100", sdp=CHROME_OFFER)
            hangup = await client.expect("hangup")
            assert (hangup["code"], hangup["reason"]) == (486, "Busy Here")
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)


@pytest.mark.parametrize("scenario", ["uas_auth", "uas_proxy_auth"])
async def test_digest_challenge_then_success(scenario: str) -> None:
    async with SippUas(scenario) as uas:
        async with gateway_to(uas, username="alice", password="secret") as running:
            async with WebRtcClient(running.ws_url) as client:
                call_id = await connected_call(client)
                await client.send({"type": "hangup", "id": call_id})
                await client.expect("hangup")
                assert await uas.wait(timeout=10) == 0, uas.summary()
    invites = uas.received("INVITE")
    assert len(invites) == 2
    header = "Proxy-Authorization:" if scenario == "uas_proxy_auth" else "Authorization:"
    assert header in invites[1] and header not in invites[0]


async def test_wrong_password_fails_cleanly() -> None:
    async with SippUas("uas_auth") as uas:
        async with gateway_to(uas, username="alice", password="wrong") as running:
            async with WebRtcClient(running.ws_url) as client:
                await client.call("100", sdp=CHROME_OFFER)
                hangup = await client.expect("hangup")
                assert hangup["code"] == 403
            await assert_released(running)


async def test_peer_that_never_answers_times_out() -> None:
    # T1 = 50 ms in tests, so Timer B (64 * T1) fires after 3.2 s.
    async with SippUas("uas_silent", keys={"hold_ms": "6000"}) as uas:
        async with gateway_to(uas) as running, WebRtcClient(running.ws_url) as client:
            await client.call("100", sdp=CHROME_OFFER)
            hangup = await client.expect("hangup", timeout=10)
            assert hangup["code"] == 408
            await assert_released(running)
            tasks = [t for t in asyncio.all_tasks() if t.get_name().startswith("call-")]
            assert all(t.done() for t in tasks)
    assert len(uas.received("INVITE")) > 1  # Timer A retransmitted it


async def test_browser_hangs_up_while_ringing_sends_cancel() -> None:
    async with SippUas("uas_ring_forever") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await client.call("100", sdp=CHROME_OFFER)
            await client.expect("ringing")
            await client.send({"type": "hangup", "id": call_id})
            hangup = await client.expect("hangup")
            assert hangup["code"] == 487
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    assert uas.received("CANCEL")


async def test_no_answer_timeout_cancels() -> None:
    async with SippUas("uas_ring_forever") as uas:
        async with gateway_to(uas, no_answer_timeout=1.0) as running:
            async with WebRtcClient(running.ws_url) as client:
                await client.call("100", sdp=CHROME_OFFER)
                await client.expect("ringing")
                hangup = await client.expect("hangup", timeout=10)
                assert (hangup["code"], hangup["reason"]) == (408, "No answer")
                assert await uas.wait(timeout=10) == 0, uas.summary()
    assert uas.received("CANCEL")


async def test_retransmitted_200_is_acked_each_time() -> None:
    async with SippUas("uas_retransmit_200") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await connected_call(client)
            async with asyncio.timeout(10):
                while len(uas.received("ACK")) < 3:
                    await asyncio.sleep(0.1)
            await client.send({"type": "hangup", "id": call_id})
            await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()


@pytest.mark.parametrize("scenario", ["uas_bad_sdp", "uas_no_common_codec"])
async def test_unusable_sdp_in_200_ends_call(scenario: str) -> None:
    async with SippUas(scenario) as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            await client.call("100", sdp=CHROME_OFFER)
            error = await client.expect("error")
            assert error["code"] == "bad-sdp" and error["message"]
            hangup = await client.expect("hangup")
            assert hangup["code"] == 488
            assert await uas.wait(timeout=10) == 0, uas.summary()  # it got ACK and BYE
            await assert_released(running)
            # The gateway goes on serving: the next call gets as far as the (finished) peer.
            assert not client.closed


async def test_answers_options() -> None:
    async with running_gateway(gateway_config()) as running:
        target = f"127.0.0.1:{running.gateway.sip_port}"
        async with SippUac("uac_options", target=target) as uac:
            assert await uac.wait(timeout=10) == 0, uac.summary()


async def test_call_over_tcp_with_audio() -> None:
    async with SippUas("uas_answer_wait_bye", transport="t1") as uas:
        trunk = parse_trunk(f"sip:127.0.0.1:{uas.port};transport=tcp")
        async with running_gateway(gateway_config(trunk=trunk)) as running:
            async with WebRtcClient(running.ws_url, tone=1000) as client:
                call_id = await connected_call(client)
                heard = await client.wait_for_tone(1000)
                assert abs(heard - 1000) < 20
                await client.send({"type": "hangup", "id": call_id})
                await client.expect("hangup")
                assert await uas.wait(timeout=10) == 0, uas.summary()
            await assert_released(running)
    invite = uas.received("INVITE")[0]
    assert "SIP/2.0/TCP" in invite and ";transport=tcp" in invite  # Via and Contact


async def test_early_media_is_heard_before_the_answer() -> None:
    # 4 s of early media outlasts Timer B (3.2 s with the tests' T1): it must not end the call.
    async with SippUas("uas_early_media", keys={"early_ms": "4000"}) as uas:
        async with gateway_to(uas) as running, WebRtcClient(running.ws_url, tone=1000) as client:
            call_id = await client.call("100")
            progress = await client.expect("progress")
            await client.accept_answer(progress)
            # sipp echoes during the 183: the tone comes back before any 200 OK.
            heard = await client.wait_for_tone(1000)
            assert abs(heard - 1000) < 20
            assert not [m for m in client.messages if m["type"] == "answer"]
            answer = await client.expect("answer")
            assert answer["sdp"] == progress["sdp"]
            await client.send({"type": "hangup", "id": call_id})
            await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()


async def test_public_address_goes_into_via_contact_and_sdp() -> None:
    async with SippUas("uas_busy") as uas, gateway_to(uas, public_address="127.0.0.9") as running:
        async with WebRtcClient(running.ws_url) as client:
            await client.call("100", sdp=CHROME_OFFER)
            await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()
    invite = uas.received("INVITE")[0]
    port = running.gateway.sip_port
    assert f"SIP/2.0/UDP 127.0.0.9:{port};" in invite
    assert f"@127.0.0.9:{port}>" in invite  # Contact
    assert "c=IN IP4 127.0.0.9" in invite


async def test_redirect_is_followed_to_the_new_target() -> None:
    """With redirect = "uri" (since issue 11 an explicit setting; by default the Contact's
    user part is routed through the dial plan instead, tests/test_redirects.py)."""
    async with SippUas("uas_answer_wait_bye") as moved:
        async with SippUas("uas_redirect", keys={"target_port": str(moved.port)}) as first:
            trunk = replace(parse_trunk(f"sip:127.0.0.1:{first.port}"), redirect="uri")
            config = gateway_config(trunk=trunk)
            async with running_gateway(config) as running, WebRtcClient(running.ws_url) as client:
                call_id = await connected_call(client)
                await client.send({"type": "hangup", "id": call_id})
                await client.expect("hangup")
                assert await first.wait(timeout=10) == 0, first.summary()
                assert await moved.wait(timeout=10) == 0, moved.summary()
    assert moved.received("INVITE sip:moved@127.0.0.1")


async def test_200_with_a_different_codec_than_the_183_is_applied() -> None:
    async with SippUas("uas_early_media_changes", keys={"early_ms": "1500"}) as uas:
        async with gateway_to(uas) as running, WebRtcClient(running.ws_url, tone=1000) as client:
            call_id = await client.call("100")
            progress = await client.expect("progress")
            assert "PCMU/8000" in progress["sdp"]
            await client.accept_answer(progress)
            answer = await client.expect("answer")
            # The browser leg keeps PCMU; the SIP leg now speaks PCMA, so the gateway transcodes.
            assert answer["sdp"] == progress["sdp"]
            (call,) = running.gateway.health()["calls"]["list"]
            assert (call["browser_codec"], call["sip_codec"], call["transcoding"]) == (
                "PCMU",
                "PCMA",
                True,
            )
            client.received.clear()
            heard = await client.wait_for_tone(1000)
            assert abs(heard - 1000) < 20, f"after the 200 switched to PCMA: {heard:.0f} Hz"
            await client.send({"type": "hangup", "id": call_id})
            await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()


async def test_caller_id_and_asserted_identity_from_the_user() -> None:
    alice = User(name="alice", extension="1001", display_name="Alice Smith", caller_id="+4930123")
    async with SippUas("uas_busy") as uas:
        trunk = replace(parse_trunk(f"sip:127.0.0.1:{uas.port}"), asserted_identity=True)
        config = gateway_config(trunk=trunk, users=(alice,), dial_plan=DialPlan(country_code="49"))
        async with running_gateway(config) as running:
            async with WebRtcClient(running.ws_url, user="alice") as client:
                await client.call("030 5555-1234", sdp=CHROME_OFFER)
                await client.expect("hangup")
                assert await uas.wait(timeout=10) == 0, uas.summary()
    invite = uas.received("INVITE")[0]
    # The dial plan made the number E.164; From and PAI carry the user's caller ID.
    assert invite.startswith("INVITE sip:+493055551234@")
    assert 'From: "Alice Smith" <sip:+4930123@127.0.0.1' in invite
    assert 'P-Asserted-Identity: "Alice Smith" <sip:+4930123@127.0.0.1' in invite
