"""Ctrl-C on `sipgw run` ends every call properly (BYE on SIP, hangup to the page)."""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.support.sipgw_process import sipgw_run
from tests.support.sipp import SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]


async def test_ctrl_c_sends_bye_and_tells_the_page() -> None:
    async with SippUas("uas_answer_wait_bye") as uas:
        async with sipgw_run(["--trunk", f"sip:127.0.0.1:{uas.port}"]) as gateway:
            ws_url = gateway.url.replace("http://", "ws://") + "ws"
            async with WebRtcClient(ws_url) as client:
                await client.call("100")
                await client.accept_answer(await client.expect("answer"))
                gateway.process.send_signal(signal.SIGINT)
                hangup = await client.expect("hangup", timeout=10)
                assert (hangup["code"], hangup["reason"]) == (503, "Gateway shutting down")
                assert await asyncio.wait_for(gateway.process.wait(), 15) == 0
        assert await uas.wait(timeout=10) == 0, uas.summary()
    assert uas.received("BYE"), "the SIP peer never got a BYE"
    assert "Traceback" not in gateway.log()
