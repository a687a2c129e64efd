"""The one module that touches aiortc internals, tested directly (aiortc is pinned 1.16.x)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import aioice.ice
import pytest
from aiortc import RTCPeerConnection, RTCRtpReceiver
from aiortc.rtp import RtpPacket

from gateway.media import aiortc_seam


def test_ice_addresses_setting_replaces_aioice_gathering() -> None:
    try:
        aiortc_seam.configure_ice_addresses(["127.0.0.1", "::1"])
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]
        assert aioice.ice.get_host_addresses(True, True) == ["127.0.0.1", "::1"]
        aiortc_seam.configure_ice_addresses(None)
        # aioice's own choice never includes loopback.
        assert "127.0.0.1" not in aioice.ice.get_host_addresses(True, False)
    finally:
        aiortc_seam.configure_ice_addresses(["127.0.0.1"])


@pytest.fixture
async def receiver() -> AsyncIterator[RTCRtpReceiver]:
    aiortc_seam.configure_ice_addresses(["127.0.0.1"])
    offerer, answerer = RTCPeerConnection(), RTCPeerConnection()
    offerer.addTransceiver("audio")
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)
    # The receiver's extension map is configured once the transports are up.
    async with asyncio.timeout(10):
        while answerer.connectionState != "connected":
            await asyncio.sleep(0.02)
    try:
        yield answerer.getTransceivers()[0].receiver
    finally:
        await offerer.close()
        await answerer.close()


def _packet_with_long_audio_level(extension_id: int) -> bytes:
    # RFC 6464's audio level is one byte; a two-byte one makes aiortc's struct.unpack fail.
    header = bytes([0x90, 0, 0, 1]) + struct.pack("!II", 1, 5)
    extension = struct.pack("!HH", 0xBEDE, 1) + bytes([(extension_id << 4) | 1, 0x7F, 0x7F, 0])
    return header + extension + b"\xff" * 160


async def test_malformed_extension_does_not_kill_the_transport(receiver: RTCRtpReceiver) -> None:
    transport = receiver.transport
    extensions = transport._rtp_header_extensions_map
    audio_level_id = extensions._HeaderExtensionsMap__ids.audio_level
    assert audio_level_id, "aiortc negotiated no audio level extension"
    packet = _packet_with_long_audio_level(audio_level_id)
    # The aiortc bug this guards against (issues 745, 770, 778): not a ValueError.
    with pytest.raises(struct.error):
        RtpPacket.parse(packet, extensions)
    aiortc_seam.harden_transport(receiver)
    await transport._handle_rtp_data(packet, 0)  # must not raise


async def test_tap_receives_payloads_before_the_jitter_buffer(receiver: RTCRtpReceiver) -> None:
    seen: list[tuple[int, int, int, bool, bytes]] = []
    aiortc_seam.tap_receiver(receiver, lambda *args: seen.append(args))
    packet = RtpPacket(payload_type=0, sequence_number=7, timestamp=160, ssrc=1)
    packet.payload = b"\x01" * 160
    packet.marker = 1
    await receiver._handle_rtp_packet(packet, arrival_time_ms=0)
    assert seen == [(0, 7, 160, True, b"\x01" * 160)]


async def test_packet_source_track_paces_by_arrival_and_drops_oldest() -> None:
    track = aiortc_seam.PacketSourceTrack(8000)
    for i in range(track.QUEUE_LIMIT + 3):
        track.push(bytes([i]), i * 160)
    first = await track.recv()
    assert bytes(first) == bytes([3]) and first.pts == 3 * 160  # three oldest dropped
    assert first.time_base.denominator == 8000
    track.stop()
