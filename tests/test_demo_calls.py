"""Calls from a WebRTC client (aiortc) through the gateway to its embedded demo endpoint."""

from __future__ import annotations

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


async def test_tone_extension_plays_440(demo_gateway: RunningGateway) -> None:
    async with WebRtcClient(demo_gateway.ws_url, tone=1000) as client:
        await client.call("601")
        answer = await client.expect("answer")
        await client.accept_answer(answer)
        heard = await client.wait_for_tone(440)
        assert abs(heard - 440) < 20, f"heard {heard:.0f} Hz, the tone extension plays 440 Hz"
