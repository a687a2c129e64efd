"""sipgw against a real Asterisk running asterisk-config/ (skipped when `asterisk` is absent).

The gateway runs in-process with asterisk-config/sipgw.toml, only its ports changed; pages
are aiortc clients that send a 1000 Hz tone and record what they hear. Both ways of
attaching sipgw to Asterisk are covered: (a) sipgw registers as "sipgw", (b) Asterisk
knows it by address and port as "sipgw-ip".
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import replace

import pytest

from gateway.config import Config, Trunk, from_toml
from gateway.sip.registration import RegistrationState
from tests.support.asterisk import (
    CONFIG_DIR,
    SKIP_REASON,
    Asterisk,
    asterisk_available,
    asterisk_version,
)
from tests.support.gateway import TEST_T1, RunningGateway, running_gateway
from tests.support.ports import free_udp_port
from tests.support.webrtc_client import WebRtcClient

_asterisk_mark = pytest.mark.asterisk

pytestmark = [
    _asterisk_mark,
    pytest.mark.skipif(not asterisk_available(), reason=SKIP_REASON),
    pytest.mark.timeout(90),
]

SIPGW_TOML = CONFIG_DIR / "sipgw.toml"
PAGE_TONE = 1000.0
PBX_TONE = 440.0  # extensions.conf 601: Playtones(440)


def sipgw_config(asterisk_port: int, *, register: bool = True) -> Config:
    """asterisk-config/sipgw.toml with test ports: the committed file must work as is."""
    config = from_toml(SIPGW_TOML)
    account = config.accounts[0]
    uri = replace(account.uri, port=asterisk_port)
    if register:
        account = replace(account, uri=uri)
    else:
        # sipgw.toml's commented mode (b): the same account, without credentials.
        account = Trunk(uri=uri, name=account.name)
    return replace(
        config,
        http_port=0,
        sip_port=0,
        sip_t1=TEST_T1,
        accounts=(account,),
        # The test suite's usual range, not the fixed one of the example.
        rtp_port_min=Config.rtp_port_min,
        rtp_port_max=Config.rtp_port_max,
        ice_addresses=("127.0.0.1",),
    )


def password(config: Config, name: str) -> str:
    user = config.user(name)
    assert user is not None and user.password is not None
    return user.password


async def wait_registered(running: RunningGateway, pbx: Asterisk) -> None:
    """sipgw says it is registered and Asterisk lists its contact under aor sipgw."""
    contact = f"sip:sipgw@127.0.0.1:{running.gateway.sip_port}"
    async with asyncio.timeout(10):
        while True:
            states = running.gateway.registration_states()
            if states and states[0]["state"] == RegistrationState.REGISTERED:
                if contact in await pbx.rx("pjsip show contacts"):
                    return
            await asyncio.sleep(0.1)


@asynccontextmanager
async def registered_setup() -> AsyncIterator[tuple[Asterisk, RunningGateway, Config]]:
    """Mode (a): Asterisk first (sipgw registers at start), then the gateway."""
    async with Asterisk() as pbx:
        config = sipgw_config(pbx.port)
        async with running_gateway(config) as running:
            await wait_registered(running, pbx)
            yield pbx, running, config


async def channels(pbx: Asterisk) -> str:
    """One line per channel ("PJSIP/sipgw-00000000!from-sipgw!600!3!Up!Echo!..."), or ""."""
    output = await pbx.rx("core show channels concise")
    return "\n".join(line for line in output.splitlines() if "!" in line)


async def wait_no_channels(pbx: Asterisk) -> None:
    async with asyncio.timeout(10):
        while (await channels(pbx)).strip():
            await asyncio.sleep(0.1)


async def test_asterisk_version_is_reported() -> None:
    # Tells the reader of a test log which Asterisk these tests ran against.
    assert asterisk_version().startswith("Asterisk ")


async def test_page_dials_echo_through_registered_sipgw() -> None:
    async with (
        registered_setup() as (pbx, running, config),
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="alice", token=password(config, "alice")
        ) as page,
    ):
        call_id = await page.call("600")
        answer = await page.expect("answer", timeout=15)
        assert answer["id"] == call_id
        await page.accept_answer(answer)

        heard = await page.wait_for_tone(PAGE_TONE, timeout=10)
        assert abs(heard - PAGE_TONE) <= 20, f"heard {heard} Hz, not the echo of {PAGE_TONE}"
        # Asterisk took the call as endpoint sipgw (authenticated), running Echo.
        active = await channels(pbx)
        assert "PJSIP/sipgw-" in active and "Echo" in active, active

        await page.send({"type": "hangup", "id": call_id})
        await wait_no_channels(pbx)
    log = pbx.log()
    assert "sipgw echo test" in log


async def test_page_dials_tone_extension() -> None:
    async with (
        registered_setup() as (_pbx, running, config),
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="bob", token=password(config, "bob")
        ) as page,
    ):
        call_id = await page.call("601")
        answer = await page.expect("answer", timeout=15)
        await page.accept_answer(answer)
        heard = await page.wait_for_tone(PBX_TONE, timeout=10)
        assert abs(heard - PBX_TONE) <= 20, f"heard {heard} Hz, not Playtones({PBX_TONE:.0f})"
        await page.send({"type": "hangup", "id": call_id})


async def test_asterisk_calls_browser_user_through_registration() -> None:
    async with (
        registered_setup() as (pbx, running, config),
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="alice", token=password(config, "alice")
        ) as page,
    ):
        # The dialplan's tone extension is the application side of the originated call.
        await pbx.rx("channel originate PJSIP/1001@sipgw extension 601@demo")
        incoming = await page.expect("incoming", timeout=15)
        await page.answer_incoming(incoming)

        heard = await page.wait_for_tone(PBX_TONE, timeout=10)
        assert abs(heard - PBX_TONE) <= 20, f"heard {heard} Hz, not Playtones({PBX_TONE:.0f})"
        assert "PJSIP/sipgw-" in await channels(pbx)

        await page.send({"type": "hangup", "id": incoming["id"]})
        await wait_no_channels(pbx)


async def test_browser_extension_in_dialplan_rings_the_right_user() -> None:
    """Dialplan [browsers] 1002 reaches bob's page, not alice's."""
    async with registered_setup() as (pbx, running, config), AsyncExitStack() as stack:
        alice = await stack.enter_async_context(
            WebRtcClient(running.ws_url, user="alice", token=password(config, "alice"))
        )
        bob = await stack.enter_async_context(
            WebRtcClient(running.ws_url, tone=PAGE_TONE, user="bob", token=password(config, "bob"))
        )
        # A Local channel runs [browsers] 1002, whose Dial goes through ${SIPGW}; its
        # other half plays the echo, so bob hears his own tone.
        await pbx.rx("channel originate Local/1002@browsers extension 600@demo")
        incoming = await bob.expect("incoming", timeout=15)
        await bob.answer_incoming(incoming)
        heard = await bob.wait_for_tone(PAGE_TONE, timeout=10)
        assert abs(heard - PAGE_TONE) <= 20, f"bob heard {heard} Hz, not his echo"
        assert not [m for m in alice.messages if m["type"] == "incoming"]
        await bob.send({"type": "hangup", "id": incoming["id"]})
        await wait_no_channels(pbx)


def with_telephone_event(offer: str, payload_type: int = 126) -> str:
    """The offer with telephone-event/8000 added, as Chromium offers it (aiortc does not)."""
    lines = offer.split("\r\n")
    audio = next(i for i, line in enumerate(lines) if line.startswith("m=audio "))
    lines[audio] += f" {payload_type}"
    last_rtpmap = max(i for i, line in enumerate(lines) if line.startswith("a=rtpmap:"))
    lines[last_rtpmap + 1 : last_rtpmap + 1] = [
        f"a=rtpmap:{payload_type} telephone-event/8000",
        f"a=fmtp:{payload_type} 0-15",
    ]
    return "\r\n".join(lines)


async def dial_602(page: WebRtcClient, pbx: Asterisk, offer: str) -> str:
    call_id = await page.call("602", sdp=offer)
    answer = await page.expect("answer", timeout=15)
    await page.accept_answer(answer)
    await reading(pbx, 1)
    return call_id


async def reading(pbx: Asterisk, round: int) -> None:
    """Read() runs for the `round`-th time: digits sent before it (or during SendDTMF)
    would be lost."""
    await pbx.wait_for_log(r"Executing \[602@[^\]]*\] Read\(", count=round, timeout=15)


async def digits_logged(pbx: Asterisk, round: int = 1) -> str:
    # The Verbose() line itself, not the dialplan trace that quotes its argument.
    found = await pbx.wait_for_log(r"(?m)sipgw-dtmf: ([0-9A-D*#]*)$", count=round, timeout=15)
    return found.group(1)


async def digits_heard(page: WebRtcClient, call_id: str, count: int) -> str:
    digits: list[str] = []
    async with asyncio.timeout(10):
        while len(digits) < count:
            message = await page.expect("dtmf")
            assert message["id"] == call_id
            digits.append(message["digit"])
    return "".join(digits)


async def test_dtmf_read_back_rfc4733_both_ways() -> None:
    """A page whose offer has telephone-event (Chromium's does): the digits reach Asterisk's
    Read() and SendDTMF's RFC 4733 packets come back to the page as `dtmf` messages."""
    async with (
        registered_setup() as (pbx, running, config),
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="alice", token=password(config, "alice")
        ) as page,
    ):
        call_id = await dial_602(page, pbx, with_telephone_event(await page.make_offer()))
        await page.send({"type": "dtmf", "id": call_id, "digits": "1234#"})
        assert await digits_logged(pbx) == "1234"
        assert await digits_heard(page, call_id, 4) == "1234"
        await reading(pbx, 2)
        await page.send({"type": "dtmf", "id": call_id, "digits": "*09#"})
        assert await digits_logged(pbx, 2) == "*09"
        assert await digits_heard(page, call_id, 3) == "*09"
        await page.send({"type": "hangup", "id": call_id})


async def test_dtmf_from_page_without_telephone_event_reaches_asterisk() -> None:
    """An offer without telephone-event (aiortc's): sipgw falls back to SIP INFO, which
    Asterisk's res_pjsip_dtmf_info takes."""
    async with (
        registered_setup() as (pbx, running, config),
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="alice", token=password(config, "alice")
        ) as page,
    ):
        call_id = await dial_602(page, pbx, await page.make_offer())
        await page.send({"type": "dtmf", "id": call_id, "digits": "1234#"})
        assert await digits_logged(pbx) == "1234"
        await page.send({"type": "hangup", "id": call_id})


async def test_dtmf_read_back_reaches_page_without_telephone_event_in_offer() -> None:
    async with (
        registered_setup() as (pbx, running, config),
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="alice", token=password(config, "alice")
        ) as page,
    ):
        call_id = await dial_602(page, pbx, await page.make_offer())
        await page.send({"type": "dtmf", "id": call_id, "digits": "1234#"})
        assert await digits_logged(pbx) == "1234"
        assert await digits_heard(page, call_id, 4) == "1234"


async def test_sipgw_matched_by_address_without_registration() -> None:
    """Mode (b): no REGISTER and no challenge; Asterisk knows sipgw by address and port.

    The gateway starts first, so that Asterisk's first OPTIONS (qualify) finds it: a
    contact that did not answer is skipped by Dial until the next qualify, 30 s later."""
    asterisk_port = free_udp_port()
    config = sipgw_config(asterisk_port, register=False)
    async with (
        running_gateway(config) as running,
        Asterisk(
            port=asterisk_port, sipgw_port=running.gateway.sip_port, sipgw_endpoint="sipgw-ip"
        ) as pbx,
        WebRtcClient(
            running.ws_url, tone=PAGE_TONE, user="bob", token=password(config, "bob")
        ) as page,
    ):
        assert not running.gateway.registrations
        # Outbound: identified by 127.0.0.1:<sipgw port>, the call runs as sipgw-ip.
        call_id = await page.call("600")
        answer = await page.expect("answer", timeout=15)
        await page.accept_answer(answer)
        heard = await page.wait_for_tone(PAGE_TONE, timeout=10)
        assert abs(heard - PAGE_TONE) <= 20, f"heard {heard} Hz, not the echo"
        assert "PJSIP/sipgw-ip-" in await channels(pbx)
        await page.send({"type": "hangup", "id": call_id})
        await wait_no_channels(pbx)

        # Inbound: the dialplan's ${SIPGW} is sipgw-ip, whose contact is sipgw's port.
        await pbx.rx("channel originate Local/1002@browsers extension 601@demo")
        incoming = await page.expect("incoming", timeout=15)
        await page.answer_incoming(incoming)
        heard = await page.wait_for_tone(PBX_TONE, timeout=10)
        assert abs(heard - PBX_TONE) <= 20, f"heard {heard} Hz, not Playtones({PBX_TONE:.0f})"
        assert "PJSIP/sipgw-ip-" in await channels(pbx)
        await page.send({"type": "hangup", "id": incoming["id"]})
        await wait_no_channels(pbx)
