"""Calls from a WebRTC client (aiortc) through the gateway to its embedded demo endpoint."""

from __future__ import annotations

import aiohttp

from tests.support.gateway import RunningGateway
from tests.support.webrtc_client import WebRtcClient


async def test_echo_extension_returns_our_tone(demo_gateway: RunningGateway) -> None:
    async with WebRtcClient(demo_gateway.ws_url, tone=1000) as client:
        call_id = await client.call("600")
        assert (await client.expect("ringing"))["id"] == call_id
        answer = await client.expect("answer")
        await client.accept_answer(answer)
        heard = await client.wait_for_tone(1000)
        assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz instead of our 1000 Hz echo"
        await client.send({"type": "hangup", "id": call_id})
        hangup = await client.expect("hangup")
        assert hangup["by"] == "local"
    assert demo_gateway.gateway.ports.in_use == 0
    # The gateway's own share of the set-up is measured, for /healthz and /metrics.
    setup = demo_gateway.gateway.health()["setup_ms"]
    assert set(setup) == {"offer_to_invite", "ok_to_answer"}
    for stats in setup.values():
        assert stats["count"] == 1 and 0 < stats["p50_ms"] == stats["p99_ms"] < 1000
    async with aiohttp.ClientSession() as http, http.get(demo_gateway.url + "metrics") as reply:
        metrics = await reply.text()
    assert 'sipgw_setup_ms_count{interval="offer_to_invite"} 1' in metrics
    assert "sipgw_calls_total 1" in metrics


async def test_tone_extension_plays_440(demo_gateway: RunningGateway) -> None:
    async with WebRtcClient(demo_gateway.ws_url, tone=1000) as client:
        await client.call("601")
        answer = await client.expect("answer")
        await client.accept_answer(answer)
        heard = await client.wait_for_tone(440)
        assert abs(heard - 440) < 20, f"heard {heard:.0f} Hz, the tone extension plays 440 Hz"


async def test_ended_calls_are_freed_while_the_page_stays(demo_gateway: RunningGateway) -> None:
    """A page that stays open all day must not keep every call it made: the INVITE
    transaction lingers 64*T1 to ACK retransmitted 2xx, and aioice may keep a connection
    running after close; neither may hold the call, its media legs or bridge."""
    import asyncio
    import gc
    import weakref

    from gateway.calls.outbound import OutboundCall
    from gateway.sip.transaction import TransactionState

    async with WebRtcClient(demo_gateway.ws_url, tone=1000) as client:
        calls = []
        for _ in range(3):
            call_id = await client.call("600")
            await client.accept_answer(await client.expect("answer"))
            session = next(iter(demo_gateway.gateway.sessions))
            calls.append(weakref.ref(session.calls[call_id]))
            await client.send({"type": "hangup", "id": call_id})
            await client.expect("hangup")
        async with asyncio.timeout(5):
            while any(call() is not None for call in calls):
                await asyncio.sleep(0.2)
                gc.collect()
        assert not [o for o in gc.get_objects() if isinstance(o, OutboundCall)]
        # ... while their INVITE transactions are still there.
        clients = demo_gateway.gateway.ua.tl._clients.values()
        assert any(t.state is TransactionState.ACCEPTED for t in clients)
