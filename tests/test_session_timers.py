"""Session timers on the gateway's own INVITEs (RFC 4028; issue 11 item 9).

A gateway killed mid-call sends no BYE: the far end only ends the call when the session
interval we asked for passes without a refresh. So every outbound INVITE asks for one.
"""

from __future__ import annotations

import asyncio

import pytest

from gateway.config import parse_trunk
from tests.support.gateway import gateway_config, running_gateway
from tests.support.sipp import SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]


def headers_of(message: str) -> list[str]:
    return message.split("\r\n\r\n", 1)[0].split("\r\n")


async def call_and_hang_up(uas: SippUas, *, wait_invites: int = 1, **changes: object) -> None:
    trunk = parse_trunk(f"sip:127.0.0.1:{uas.port}")
    async with running_gateway(gateway_config(trunk=trunk, **changes)) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await client.call("100")
            await client.accept_answer(await client.expect("answer"))
            async with asyncio.timeout(10):
                while len(uas.received("INVITE")) < wait_invites:
                    await asyncio.sleep(0.1)
            await client.send({"type": "hangup", "id": call_id})
            hangup = await client.expect("hangup")
            assert hangup["by"] == "local", hangup
            assert await uas.wait(timeout=10) == 0, uas.summary()


async def test_invite_asks_for_a_session_timer_by_default() -> None:
    async with SippUas("uas_answer_wait_bye") as uas:
        await call_and_hang_up(uas)
    (invite,) = uas.received("INVITE")
    headers = headers_of(invite)
    assert "Session-Expires: 1800" in headers  # no refresher: the far end chooses
    assert any(h.startswith("Supported:") and "timer" in h for h in headers)


async def test_session_expires_0_asks_for_none() -> None:
    async with SippUas("uas_answer_wait_bye") as uas:
        await call_and_hang_up(uas, session_expires=0)
    (invite,) = uas.received("INVITE")
    assert not any(h.lower().startswith("session-expires") for h in headers_of(invite))


async def test_422_retry_then_the_gateway_refreshes_as_uac() -> None:
    """422 with Min-SE 4 to our 2 s: one retry at 4 s; the 200 makes us the refresher
    (Session-Expires 4;refresher=uac), so our re-INVITE comes within 2 s of the answer."""
    async with SippUas("uas_session_timer_422", keys={"min_se": "4"}) as uas:
        await call_and_hang_up(uas, wait_invites=3, session_expires=2, min_session_expires=2)
    first, retry, refresh = uas.received("INVITE")
    assert "Session-Expires: 2" in headers_of(first)
    assert "Session-Expires: 4" in headers_of(retry) and "Min-SE: 4" in headers_of(retry)
    assert "CSeq: 2 INVITE" in headers_of(retry)
    assert "Session-Expires: 4;refresher=uac" in headers_of(refresh)
    assert uas.received("BYE")
