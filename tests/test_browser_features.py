"""Issue-3 features end to end in headless Chromium: inbound calls from a real phone,
DTMF from the page, and two browser users calling each other through the gateway."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page

from gateway.config import User, parse_trunk
from tests.support.audio import dominant_frequency, read_wav, write_tone_wav
from tests.support.baresip import BaresipPhone, baresip_available
from tests.support.browser import chromium_available, launch_browser, wait_for_tone
from tests.support.gateway import gateway_config, running_gateway
from tests.support.kamailio import Kamailio, kamailio_available

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Debian package chromium not installed"),
]

ALICE = User(name="alice", password="alice-pw", extension="1001", display_name="Alice")
BOB = User(name="bob", password="bob-pw", extension="1002", display_name="Bob")
USERS = (ALICE, BOB)


async def open_page(browser: Browser, url: str, user: User) -> Page:
    page = await browser.new_page()
    await page.goto(f"{url}?user={user.name}&token={user.password}")
    await page.wait_for_selector("#state[data-state=ready]", timeout=10_000)
    return page


async def answer(page: Page) -> None:
    await page.wait_for_selector("#incoming", state="visible", timeout=10_000)
    await page.click("#answer")
    await page.wait_for_selector("#state[data-state=connected]", timeout=10_000)


@pytest.mark.baresip
@pytest.mark.skipif(not baresip_available(), reason="Debian package baresip-core not installed")
async def test_phone_calls_page_answered_by_click_tone_both_ways(tmp_path: Path) -> None:
    page_wav = write_tone_wav(tmp_path / "page.wav", 1000, seconds=30)
    phone_wav = write_tone_wav(tmp_path / "phone.wav", 440, seconds=60, sample_rate=8000)
    config = gateway_config(users=USERS)
    async with running_gateway(config) as running, launch_browser(page_wav) as browser:
        page = await open_page(browser, running.url, ALICE)
        async with BaresipPhone(tone_wav=phone_wav, record_dir=tmp_path / "rec") as phone:
            await phone.dial(f"sip:1001@127.0.0.1:{running.gateway.sip_port}")
            await page.wait_for_selector("#incoming", state="visible", timeout=10_000)
            assert await page.get_attribute("#incoming", "data-from") == "demo"
            await answer(page)
            await phone.wait_event("CALL_ESTABLISHED", timeout=10)
            heard = await wait_for_tone(page, 440, within=10)
            assert abs(heard.frequency - 440) < 15, heard
            # DTMF from the page's dial pad reaches the phone as RFC 4733 events.
            for digit in "47":
                await page.click(f'button.key[data-digit="{digit}"]')
            dtmf = [await phone.wait_event("CALL_DTMF_START", timeout=10) for _ in range(2)]
            assert [e.get("param") for e in dtmf] == ["4", "7"]
            await page.click("#hangup")
            await phone.wait_event("CALL_CLOSED", timeout=10)
            recordings = await phone.wait_recordings_closed()
    samples, rate = read_wav(recordings[-1])
    assert abs(dominant_frequency(samples[-rate:], rate) - 1000) < 15


async def test_two_browser_users_call_each_other(tmp_path: Path) -> None:
    alice_wav = write_tone_wav(tmp_path / "alice.wav", 1000, seconds=30)
    bob_wav = write_tone_wav(tmp_path / "bob.wav", 600, seconds=30)
    async with running_gateway(gateway_config(users=USERS)) as running:
        async with (
            launch_browser(alice_wav) as alice_browser,
            launch_browser(bob_wav) as bob_browser,
        ):
            alice = await open_page(alice_browser, running.url, ALICE)
            bob = await open_page(bob_browser, running.url, BOB)
            await alice.fill("#number", "1002")
            await alice.click("#call")
            await bob.wait_for_selector("#incoming", state="visible", timeout=10_000)
            assert await bob.get_attribute("#incoming", "data-from") == "1001"
            await answer(bob)
            await alice.wait_for_selector("#state[data-state=connected]", timeout=10_000)
            assert abs((await wait_for_tone(alice, 600)).frequency - 600) < 15
            assert abs((await wait_for_tone(bob, 1000)).frequency - 1000) < 15
            # Media went browser to browser: the gateway relayed signalling only.
            assert running.gateway.ports.in_use == 0
            await alice.click("#hangup")
            await bob.wait_for_selector("#state[data-state=ended]", timeout=10_000)


async def test_wrong_password_gets_no_session(tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "mic.wav", 1000, seconds=5)
    async with (
        running_gateway(gateway_config(users=USERS)) as running,
        launch_browser(wav) as browser,
    ):
        page = await browser.new_page()
        await page.goto(f"{running.url}?user=alice&token=wrong")
        await page.wait_for_function(
            "window.softphone.messages.some(m => m.type === 'error')", timeout=10_000
        )
        message = await page.text_content("#login-message")
        assert message and "wrong password" in message
        assert await page.get_attribute("#state", "data-state") != "ready"
        assert await page.is_visible("#login-form")


@pytest.mark.kamailio
@pytest.mark.baresip
@pytest.mark.skipif(not kamailio_available(), reason="kamailio not installed (Debian package)")
@pytest.mark.skipif(not baresip_available(), reason="Debian package baresip-core not installed")
async def test_registered_to_kamailio_phone_calls_page_through_proxy(tmp_path: Path) -> None:
    page_wav = write_tone_wav(tmp_path / "page.wav", 1000, seconds=30)
    phone_wav = write_tone_wav(tmp_path / "phone.wav", 440, seconds=60, sample_rate=8000)
    async with Kamailio(users={"alice": "secret"}) as kamailio:
        account = replace(
            parse_trunk(kamailio.uri(), username="alice", password="secret"),
            name="kamailio",
            register=True,
        )
        config = gateway_config(accounts=(account,), users=(User(name="alice", extension="1001"),))
        async with running_gateway(config) as running, launch_browser(page_wav) as browser:
            page = await browser.new_page()
            await page.goto(f"{running.url}?user=alice")
            await page.wait_for_selector(
                '#registrations li[data-account="kamailio"][data-state="registered"]',
                timeout=10_000,
            )
            async with BaresipPhone(tone_wav=phone_wav, record_dir=tmp_path / "rec") as phone:
                await phone.dial(kamailio.uri("alice"))
                await answer(page)
                await phone.wait_event("CALL_ESTABLISHED", timeout=10)
                heard = await wait_for_tone(page, 440, within=10)
                assert abs(heard.frequency - 440) < 15, heard
                await phone.hangup()
                await page.wait_for_selector("#state[data-state=ended]", timeout=10_000)
                recordings = await phone.wait_recordings_closed()
    samples, rate = read_wav(recordings[-1])
    assert abs(dominant_frequency(samples[-rate:], rate) - 1000) < 15
