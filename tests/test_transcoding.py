"""Relay when both legs share a codec, transcode when they cannot."""

from __future__ import annotations

from pathlib import Path

import pytest

import sdp
from gateway.config import parse_trunk
from tests.support.gateway import gateway_config, running_gateway
from tests.support.sipp import SippUas, sipp_available
from tests.support.webrtc_client import WebRtcClient

CORPUS = Path(__file__).parent / "sdp_corpus"


def test_sip_offer_adds_transcodable_codecs_after_the_browsers() -> None:
    firefox = (CORPUS / "firefox_offer.sdp").read_text()
    offer = sdp.browser_offer_to_sip(
        firefox, address="127.0.0.1", port=20000, transcodable=sdp.SUPPORTED_CODECS
    )
    browser_only = sdp.browser_offer_to_sip(firefox, address="127.0.0.1", port=20000)
    names = [c.name for c in offer.codecs]
    # Nothing to add when the browser offered them all; order unchanged.
    assert names == [c.name for c in browser_only.codecs]


def test_opus_only_browser_still_offers_g711_to_sip() -> None:
    chrome = (CORPUS / "chrome_offer.sdp").read_text()
    opus = sdp.browser_codec_for(chrome, sdp.Codec("opus", 48000, 2, 111))
    opus_only = sdp.restrict_offer(chrome, opus)
    offer = sdp.browser_offer_to_sip(
        opus_only, address="127.0.0.1", port=20000, transcodable=sdp.SUPPORTED_CODECS
    )
    assert [c.name for c in offer.codecs] == ["opus", "G722", "PCMU", "PCMA"]
    assert [c.payload_type for c in offer.codecs][1:] == [9, 0, 8]
    assert sdp.parse_remote(offer.sdp).codecs == offer.codecs


@pytest.mark.sipp
@pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)")
async def test_opus_browser_to_pcmu_peer_is_transcoded_both_ways() -> None:
    async with SippUas("uas_answer_wait_bye") as uas:
        trunk = parse_trunk(f"sip:127.0.0.1:{uas.port}")
        async with running_gateway(gateway_config(trunk=trunk)) as running:
            async with WebRtcClient(running.ws_url, tone=1000, codecs=("opus",)) as client:
                call_id = await client.call("100")
                answer = await client.expect("answer")
                assert "opus/48000" in answer["sdp"] and "PCMU" not in answer["sdp"]
                await client.accept_answer(answer)
                # Opus -> PCMU -> sipp's echo -> PCMU -> Opus, and still 1 kHz.
                heard = await client.wait_for_tone(1000)
                assert abs(heard - 1000) < 20, f"heard {heard:.0f} Hz after transcoding"
                await client.send({"type": "hangup", "id": call_id})
                await client.expect("hangup")
            assert await uas.wait(timeout=10) == 0, uas.summary()
    assert "PCMU" in uas.received("INVITE")[0]
