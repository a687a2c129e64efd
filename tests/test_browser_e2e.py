"""End to end in headless Chromium: the page served by `sipgw run` makes real calls.

The fake microphone plays a WAV tone; the test measures, inside the page, the frequency
of the audio that comes back, and for the baresip call also what the phone recorded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page

from tests.support.audio import dominant_frequency, read_wav, write_tone_wav
from tests.support.baresip import BaresipPhone, baresip_available
from tests.support.browser import chromium_available, launch_browser, wait_for_tone
from tests.support.sipgw_process import sipgw_run

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not chromium_available(), reason="Debian package chromium not installed"),
]

BROWSER_TONE = 1000.0
PHONE_TONE = 440.0


@pytest.fixture
def mic_wav(tmp_path: Path) -> Path:
    return write_tone_wav(tmp_path / "mic.wav", BROWSER_TONE, seconds=30)


async def dial(page: Page, url: str, number: str) -> None:
    await page.goto(url)
    await page.wait_for_selector("#state[data-state=ready]", timeout=10_000)
    await page.fill("#number", number)
    await page.click("#call")
    await page.wait_for_selector("#state[data-state=connected]", timeout=15_000)


async def hang_up(page: Page) -> None:
    await page.click("#hangup")
    await page.wait_for_selector("#state[data-state=ended]", timeout=10_000)


async def test_page_dials_echo_extension_and_hears_itself(mic_wav: Path, tmp_path: Path) -> None:
    async with sipgw_run() as gateway, launch_browser(mic_wav) as browser:
        page = await browser.new_page()
        await dial(page, gateway.url, "600")
        heard = await wait_for_tone(page, BROWSER_TONE, within=10)
        assert abs(heard.frequency - BROWSER_TONE) < 15, heard
        await page.screenshot(path=str(tmp_path / "connected.png"))
        await hang_up(page)
        assert await page.get_attribute("#reason", "data-code") in ("", None, "200")


@pytest.mark.baresip
@pytest.mark.skipif(not baresip_available(), reason="Debian package baresip-core not installed")
async def test_page_calls_baresip_through_trunk_tone_both_ways(
    mic_wav: Path, tmp_path: Path
) -> None:
    phone_wav = write_tone_wav(tmp_path / "phone.wav", PHONE_TONE, seconds=60, sample_rate=8000)
    async with BaresipPhone(tone_wav=phone_wav, record_dir=tmp_path / "rec") as phone:
        trunk = f"sip:127.0.0.1:{phone.sip_port}"
        async with sipgw_run(["--trunk", trunk]) as gateway, launch_browser(mic_wav) as browser:
            page = await browser.new_page()
            await dial(page, gateway.url, phone.user)
            await phone.wait_event("CALL_ESTABLISHED", timeout=10)
            heard = await wait_for_tone(page, PHONE_TONE, within=10)
            assert abs(heard.frequency - PHONE_TONE) < 15, heard
            await hang_up(page)
            await phone.wait_event("CALL_CLOSED", timeout=10)
            recordings = await phone.wait_recordings_closed()
    received = [p for p in recordings if p.name.endswith("-dec.wav")]
    assert received, f"baresip recorded nothing: {recordings}"
    samples, rate = read_wav(received[-1])
    tail = samples[-rate:]  # the last second the phone heard
    assert abs(dominant_frequency(tail, rate) - BROWSER_TONE) < 15
