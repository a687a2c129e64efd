"""Redirects (3xx) and REFER never take the trunk's credentials elsewhere: their target's
user part is routed through the dial plan and the policy as if dialled, and a challenge
from a host that is not the account's gets no digest (issue 11, item 4). sipp plays the
trunk on 127.0.0.1 and a foreign host on 127.0.0.9."""

from __future__ import annotations

import logging
from contextlib import AsyncExitStack
from dataclasses import replace

import pytest

from gateway.config import DialPlan, parse_trunk
from gateway.security import SecurityEvent
from tests.support.gateway import gateway_config, running_gateway
from tests.support.sipp import SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient
from tests.test_call_features import account
from tests.test_inbound_calls import alice_gateway, assert_released, dial, pages

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]

EVIL = "127.0.0.9"
US = DialPlan(country_code="1", international_prefix="011", national_prefix="1")


def trunk_at(port: int, **changes: object) -> object:
    trunk = parse_trunk(f"sip:127.0.0.1:{port}", username="alice", password="secret")
    return replace(trunk, **changes)  # type: ignore[arg-type]


async def test_redirect_is_routed_through_the_trunk_not_to_the_contacts_host() -> None:
    async with (
        SippUas("uas_auth", host=EVIL, timeout=5) as evil,
        SippUas(
            "uas_redirect_then_busy", keys={"contact": f"sip:+15551234@{EVIL}:{evil.port}"}
        ) as trunk,
    ):
        config = gateway_config(trunk=trunk_at(trunk.port), dial_plan=US)
        async with running_gateway(config) as running, WebRtcClient(running.ws_url) as client:
            await client.call("+1 415 555 0100")
            hangup = await client.expect("hangup")
            assert hangup["code"] == 486, hangup
            assert await trunk.wait(timeout=10) == 0, trunk.summary()
            await assert_released(running)
    first, second = trunk.received("INVITE")
    assert first.startswith("INVITE sip:+14155550100@127.0.0.1")
    # The Contact's user part, on the trunk (as if the user had dialled it)...
    assert second.startswith(f"INVITE sip:+15551234@127.0.0.1:{trunk.port}")
    # ... and the foreign host heard nothing, least of all a digest.
    assert not evil.received("INVITE")


async def test_redirect_to_another_host_gets_no_credentials(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """redirect = "uri": the Contact's host is tried, but its 401 is not answered."""
    async with (
        SippUas("uas_auth", host=EVIL, timeout=5) as evil,
        SippUas("uas_redirect_to", keys={"contact": f"sip:+15551234@{EVIL}:{evil.port}"}) as trunk,
    ):
        config = gateway_config(trunk=trunk_at(trunk.port, redirect="uri"), dial_plan=US)
        async with running_gateway(config) as running, WebRtcClient(running.ws_url) as client:
            with caplog.at_level(logging.WARNING, logger="gateway.security"):
                await client.call("+1 415 555 0100")
                hangup = await client.expect("hangup")
            assert hangup["code"] == 401, hangup
            assert running.gateway.security.counts[SecurityEvent.CREDENTIALS_WITHHELD] == 1
            await assert_released(running)
    (invite,) = evil.received("INVITE")
    assert "Authorization:" not in invite
    assert any(
        m.startswith(f"SECURITY event=credentials-withheld src={EVIL} ") for m in caplog.messages
    ), caplog.messages


async def test_redirect_to_a_premium_number_is_refused_by_the_policy() -> None:
    async with SippUas("uas_redirect_to", keys={"contact": "sip:+19005550100@127.0.0.1"}) as trunk:
        config = gateway_config(trunk=trunk_at(trunk.port), dial_plan=US)
        async with running_gateway(config) as running, WebRtcClient(running.ws_url) as client:
            await client.call("+1 415 555 0100")
            hangup = await client.expect("hangup")
            assert hangup["code"] == 302, hangup
            assert await trunk.wait(timeout=10) == 0, trunk.summary()
            assert running.gateway.security.counts[SecurityEvent.POLICY_REFUSED] == 1
            await assert_released(running)
    assert len(trunk.received("INVITE")) == 1


async def test_refer_to_a_premium_number_elsewhere_is_refused() -> None:
    async with (
        SippUas("uas_auth", host=EVIL, timeout=5) as evil,
        alice_gateway(accounts=(account(allow_refer=True),)) as running,
        AsyncExitStack() as stack,
    ):
        (page,) = await pages(running, 1, stack)
        keys = {"refer_to": f"sip:+19005550100@{EVIL}:{evil.port}"}
        async with dial(running, "uac_inbound_refer_refused", keys=keys, rtp_echo=True) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            await page.expect("hangup", timeout=10)  # the caller's BYE after the 403
            assert await uac.wait(timeout=10) == 0, uac.summary()
        assert running.gateway.security.counts[SecurityEvent.POLICY_REFUSED] == 1
        await assert_released(running)
    assert not evil.received("INVITE")


async def test_refer_is_routed_through_the_account_not_to_the_named_host() -> None:
    async with (
        SippUas("uas_auth", host=EVIL, timeout=5) as evil,
        SippUas("uas_answer_wait_bye") as carrier,
        alice_gateway(accounts=(account(allow_refer=True, port=carrier.port),)) as running,
        AsyncExitStack() as stack,
    ):
        (page,) = await pages(running, 1, stack)
        keys = {"refer_to": f"sip:bob@{EVIL}:{evil.port}"}
        async with dial(running, "uac_inbound_refer", keys=keys) as uac:
            incoming = await page.expect("incoming")
            await page.answer_incoming(incoming)
            await page.expect("answer")
            transferred = await page.expect("transferred", timeout=10)
            assert transferred["to"] == f"sip:bob@127.0.0.1:{carrier.port}"
            assert await uac.wait(timeout=10) == 0, uac.summary()
            await page.send({"type": "hangup", "id": incoming["id"]})
            await page.expect("hangup")
            assert await carrier.wait(timeout=10) == 0, carrier.summary()
        await assert_released(running)
    (invite,) = carrier.received("INVITE")
    assert invite.startswith(f"INVITE sip:bob@127.0.0.1:{carrier.port}")
    assert not evil.received("INVITE")
