"""TURN: sipgw hands each session TURN REST API credentials; a relay-only call through a
real coturn carries audio, which proves the credentials work."""

from __future__ import annotations

import base64
import hashlib
import hmac
from pathlib import Path

import pytest

from gateway.service import turn_credentials
from tests.support.audio import write_tone_wav
from tests.support.browser import chromium_available, launch_browser, wait_for_tone
from tests.support.coturn import Coturn, coturn_available
from tests.support.gateway import gateway_config, running_gateway
from tests.support.webrtc_client import WebRtcClient

SECRET = "turn-shared-secret"


def test_credentials_follow_the_turn_rest_api() -> None:
    creds = turn_credentials(SECRET, "alice", ttl=600, now=1_700_000_000)
    assert creds["username"] == "1700000600:alice"
    expected = hmac.new(SECRET.encode(), b"1700000600:alice", hashlib.sha1).digest()
    assert base64.b64decode(creds["credential"]) == expected


async def test_welcome_carries_turn_credentials_and_policy() -> None:
    config = gateway_config(
        turn_urls=("turn:127.0.0.1:3478",), turn_secret=SECRET, ice_transport_policy="relay"
    )
    async with running_gateway(config) as running, WebRtcClient(running.ws_url) as client:
        (server,) = client.welcome["iceServers"]
        assert server["urls"] == ["turn:127.0.0.1:3478"]
        expiry, user = server["username"].split(":", 1)
        assert user == client.welcome["user"] and int(expiry) > 0
        assert client.welcome["iceTransportPolicy"] == "relay"


@pytest.mark.browser
@pytest.mark.skipif(not chromium_available(), reason="Debian package chromium not installed")
@pytest.mark.skipif(not coturn_available(), reason="coturn not installed (Debian package coturn)")
async def test_relay_only_call_through_coturn_carries_audio(tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "mic.wav", 1000, seconds=30)
    async with Coturn(SECRET) as turn:
        config = gateway_config(
            turn_urls=(turn.url,), turn_secret=SECRET, ice_transport_policy="relay"
        )
        async with running_gateway(config) as running, launch_browser(wav) as browser:
            page = await browser.new_page()
            await page.goto(running.url)
            await page.wait_for_selector("#state[data-state=ready]", timeout=10_000)
            await page.fill("#number", "600")
            await page.click("#call")
            await page.wait_for_selector("#state[data-state=connected]", timeout=15_000)
            heard = await wait_for_tone(page, 1000, within=10)
            assert abs(heard.frequency - 1000) < 15, heard
            # The page offered relay candidates only, so the audio went through coturn.
            local = await page.evaluate("window.softphone.pc.localDescription.sdp")
            candidates = [line for line in local.splitlines() if line.startswith("a=candidate")]
            assert candidates and all(" typ relay " in c for c in candidates)
            await page.click("#hangup")
        log = turn.log()
        assert "ALLOCATE processed, success" in log
        assert "CREATE_PERMISSION processed, success" in log
