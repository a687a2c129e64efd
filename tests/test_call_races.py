"""Calls that end while they are still being set up give back everything they took.

Issue 11 item 3: an INVITE followed at once by a CANCEL, with a page of the user online,
left the call's RTP port pair, sockets and peer connection behind (`InboundCall.start`
went on after `_end` ran). Each test races a bounded number of set-ups against their end
at varying moments, then checks fds, RTP ports, tasks, transactions, dialogs and peer
connections are back at the baseline, and that calls still work with a 10-pair RTP range.
"""

from __future__ import annotations

import asyncio
from contextlib import AsyncExitStack

import pytest

from gateway.config import User, parse_trunk
from gateway.policy import PolicySettings, Rules
from tests.support.gateway import gateway_config, running_gateway
from tests.support.raw_sip import RawSipCaller
from tests.support.resources import ResourceSnapshot, assert_back_to
from tests.support.sipp import SippUac, SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]

ALICE = User(name="alice", extension="1001")
SMALL_RANGE = {"rtp_port_min": 41000, "rtp_port_max": 41020}  # 10 pairs
# Seconds between INVITE and CANCEL; None: once the page got `incoming`.
DELAYS: tuple[float | None, ...] = (0.0, 0.0, 0.002, 0.005, 0.02, None)


async def test_invite_cancel_races_release_everything() -> None:
    config = gateway_config(users=(ALICE,), **SMALL_RANGE)
    async with running_gateway(config) as running, AsyncExitStack() as stack:
        gateway = running.gateway
        page = await stack.enter_async_context(WebRtcClient(running.ws_url, user="alice"))
        caller = await stack.enter_async_context(RawSipCaller(gateway.sip_port, "1001"))
        baseline = ResourceSnapshot.take(gateway)
        for i in range(60):
            delay = DELAYS[i % len(DELAYS)]
            call = caller.invite()
            if delay is None:
                await page.expect("incoming")
            elif delay:
                await asyncio.sleep(delay)
            caller.cancel(call)
            async with asyncio.timeout(5):
                code = await call.final
            # 487 (cancelled) or 503 (set-up ended by the CANCEL first); never a leak.
            assert code in (487, 503), (code, call.responses)
        # Ten at once, cancelled together: several set-ups in flight at each CANCEL.
        batch = [caller.invite() for _ in range(10)]
        await asyncio.sleep(0.003)
        for call in batch:
            caller.cancel(call)
        async with asyncio.timeout(5):
            codes = await asyncio.gather(*(c.final for c in batch))
        assert set(codes) <= {487, 503}, codes
        await assert_back_to(gateway, baseline)
        assert gateway.health()["calls"]["active"] == 0

        # Still works, from a fresh page (the first one's queue holds the races' messages).
        await page.__aexit__(None, None, None)
        page = await stack.enter_async_context(WebRtcClient(running.ws_url, user="alice"))
        for _ in range(2):
            async with SippUac(
                "uac_inbound_call",
                target=f"127.0.0.1:{gateway.sip_port}",
                service="1001",
                rtp_echo=True,
            ) as uac:
                incoming = await page.expect("incoming")
                await page.answer_incoming(incoming)
                await page.expect("answer")
                heard = await page.wait_for_tone(1000)
                assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz"
                await page.expect("hangup", timeout=10)
                assert await uac.wait(timeout=10) == 0, uac.summary()


async def test_page_hangs_up_outbound_calls_during_setup() -> None:
    async with SippUas("uas_ring_forever", max_calls=100, timeout=60) as uas:
        trunk = parse_trunk(f"sip:127.0.0.1:{uas.port}")
        # 40 calls within a minute: past the default calls_per_minute (20) of the policy.
        unlimited = PolicySettings(rules=Rules(max_calls=4, calls_per_minute=0))
        config = gateway_config(trunk=trunk, policy=unlimited, **SMALL_RANGE)
        async with running_gateway(config) as running, AsyncExitStack() as stack:
            gateway = running.gateway
            page = await stack.enter_async_context(WebRtcClient(running.ws_url))
            offer = await page.make_offer()  # one offer, so no client peer per call
            baseline = ResourceSnapshot.take(gateway)
            for i in range(40):
                delay = DELAYS[i % len(DELAYS)]
                call_id = await page.call("100", sdp=offer)
                if delay is None:
                    await page.expect("ringing")
                elif delay:
                    await asyncio.sleep(delay)
                await page.send({"type": "hangup", "id": call_id})
                hangup = await page.expect("hangup")
                assert hangup["id"] == call_id
            await assert_back_to(gateway, baseline)


async def test_page_goes_away_during_setup() -> None:
    """The WebSocket closes while calls are set up, both ways."""
    async with SippUas("uas_ring_forever", max_calls=100, timeout=60) as uas:
        trunk = parse_trunk(f"sip:127.0.0.1:{uas.port}")
        config = gateway_config(trunk=trunk, users=(ALICE,), **SMALL_RANGE)
        async with running_gateway(config) as running:
            gateway = running.gateway
            async with RawSipCaller(gateway.sip_port, "1001") as caller:
                offer_page = WebRtcClient(running.ws_url, user="alice")
                async with offer_page:
                    offer = await offer_page.make_offer()
                    if offer_page.pc is not None:
                        await offer_page.pc.close()
                baseline = ResourceSnapshot.take(gateway)
                for i in range(24):
                    delay = DELAYS[i % len(DELAYS)] or 0.0
                    async with WebRtcClient(running.ws_url, user="alice") as page:
                        if i % 2:
                            await page.call("100", sdp=offer)
                        else:
                            caller.invite()
                        if delay:
                            await asyncio.sleep(delay)
                    # Leaving the block closed the socket mid set-up.
                await assert_back_to(gateway, baseline)
