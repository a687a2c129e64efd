"""RFC 3261 promises of the gateway's dialogs, against sipp and a page:

- a far end that re-INVITEs and withholds its ACK sees the 200 again at T1, then 2*T1
  later (section 13.3.1.4), and the call goes on once it ACKs;
- a far end that answers a hold re-INVITE with 100 and nothing more does not stop the
  page from hanging up: the re-INVITE is CANCELled and the BYE follows at once.
"""

from __future__ import annotations

import asyncio
import re
import time
from contextlib import AsyncExitStack
from datetime import datetime

import pytest

from tests.support.gateway import TEST_T1
from tests.support.sipp import SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient
from tests.test_call_features import connected_call, gateway_to
from tests.test_inbound_calls import alice_gateway, assert_released, dial, pages

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]

# A -trace_msg entry: "----- YYYY-MM-DD<tab or space>HH:MM:SS.ffffff[ rest]", then the
# direction line, a blank line and the message.
_ENTRY = re.compile(
    r"^-{20,} (\d{4}-\d\d-\d\d)\s+(\d\d:\d\d:\d\d\.\d+)[^\n]*\n"
    r"(?:UDP|TCP) message (sent|received)[^\n]*\n\n(.*?)(?=^-{20,} |\Z)",
    re.MULTILINE | re.DOTALL,
)


def trace_times(trace: str, direction: str, start: str, cseq: str) -> list[float]:
    """Wall-clock times (epoch seconds) of the messages sipp logged in `direction` whose
    first line starts with `start` and whose CSeq is `cseq`."""
    times = []
    for date, clock, where, text in _ENTRY.findall(trace):
        if where == direction and text.startswith(start) and f"CSeq: {cseq}" in text:
            times.append(datetime.fromisoformat(f"{date} {clock}").timestamp())
    return times


async def test_reinvite_200_is_resent_until_the_ack_and_the_call_survives() -> None:
    async with alice_gateway() as running, AsyncExitStack() as stack:
        (page,) = await pages(running, 1, stack)
        async with dial(running, "uac_inbound_reinvite_no_ack", rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            held = await page.expect("held", timeout=10)
            assert (held["held"], held["by"]) == (True, "remote")
            hangup = await page.expect("hangup", timeout=10)
            # The caller's BYE ended it, not the gateway giving up on the ACK.
            assert (hangup["by"], hangup["reason"]) == ("remote", "Remote party hung up")
            assert await uac.wait(timeout=10) == 0, uac.summary()
        await assert_released(running)
    times = trace_times(uac.messages(), "received", "SIP/2.0 200", "2 INVITE")
    assert len(times) == 3, uac.messages()
    first_gap, second_gap = times[1] - times[0], times[2] - times[1]
    # T1 then 2*T1 (50 and 100 ms here); the loaded machine may add, never take away.
    assert TEST_T1 * 0.8 <= first_gap < TEST_T1 + 0.15, times
    assert 2 * TEST_T1 * 0.8 <= second_gap < 2 * TEST_T1 + 0.15, times


async def test_hangup_is_not_held_up_by_a_reinvite_answered_100_only() -> None:
    async with SippUas("uas_hold_trying_only") as uas, gateway_to(uas) as running:
        async with WebRtcClient(running.ws_url) as client:
            call_id = await connected_call(client)
            await client.send({"type": "hold", "id": call_id})
            async with asyncio.timeout(5):
                while not uas.sent("SIP/2.0 100"):
                    await asyncio.sleep(0.02)
            hung_up_at = time.time()
            await client.send({"type": "hangup", "id": call_id})
            hangup = await client.expect("hangup", timeout=2)
            assert hangup["by"] == "local"
            assert await uas.wait(timeout=10) == 0, uas.summary()
        await assert_released(running)
    (bye_at,) = trace_times(uas.messages(), "received", "BYE ", "3 BYE")
    (cancel_at,) = trace_times(uas.messages(), "received", "CANCEL ", "2 CANCEL")
    assert cancel_at <= bye_at
    assert bye_at - hung_up_at < 0.2, (bye_at - hung_up_at, uas.messages())
