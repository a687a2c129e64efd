"""restrict_offer output given to aiortc, the WebRTC stack that answers the browser."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sdp import parse_remote, restrict_offer

CORPUS = Path(__file__).parent / "sdp_corpus"


@pytest.mark.parametrize(
    "name",
    ["chrome_offer.sdp", "chrome_offer_gathered.sdp", "firefox_offer.sdp", "safari_offer.sdp"],
)
async def test_aiortc_answers_with_the_kept_codec_only(name: str) -> None:
    original = (CORPUS / name).read_bytes().decode("utf-8")
    for keep in parse_remote(original).codecs:
        # No ICE servers: a bare RTCPeerConnection would contact Google's STUN server.
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(
                RTCSessionDescription(sdp=restrict_offer(original, keep), type="offer")
            )
            answer = await pc.createAnswer()
        finally:
            await pc.close()
        assert answer is not None
        chosen = parse_remote(answer.sdp)
        assert [(c.name, c.payload_type) for c in chosen.codecs] == [(keep.name, keep.payload_type)]
