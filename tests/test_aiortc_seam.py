"""The one module that touches aiortc internals, tested directly (aiortc is pinned 1.16.x)."""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator

import aioice.ice
import pytest
from aiortc import RTCPeerConnection
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from gateway.media import aiortc_seam

Packet = tuple[int, int, int, bool, bytes]


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


class Pair:
    """Two connected peer connections, each with a tap collecting what it receives."""

    def __init__(self) -> None:
        self.offerer, self.answerer = RTCPeerConnection(), RTCPeerConnection()
        self.to_offerer: list[Packet] = []
        self.to_answerer: list[Packet] = []


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Pair, aiortc_seam.MediaTap, aiortc_seam.MediaTap]]:
    aiortc_seam.configure_ice_addresses(["127.0.0.1"])
    p = Pair()
    p.offerer.addTrack(aiortc_seam.DormantTrack())
    offer_tap = aiortc_seam.MediaTap(
        p.offerer.getTransceivers()[0], lambda *a: p.to_offerer.append(a)
    )
    await p.offerer.setLocalDescription(await p.offerer.createOffer())
    await p.answerer.setRemoteDescription(p.offerer.localDescription)
    transceiver = p.answerer.getTransceivers()[0]
    transceiver.sender.replaceTrack(aiortc_seam.DormantTrack())
    transceiver.direction = "sendrecv"
    answer_tap = aiortc_seam.MediaTap(transceiver, lambda *a: p.to_answerer.append(a))
    await p.answerer.setLocalDescription(await p.answerer.createAnswer())
    await p.offerer.setRemoteDescription(p.answerer.localDescription)
    offer_tap.install()
    answer_tap.install()
    try:
        yield p, offer_tap, answer_tap
    finally:
        await p.offerer.close()
        await p.answerer.close()


async def test_tap_sends_srtp_both_ways_once_connected(
    pair: tuple[Pair, aiortc_seam.MediaTap, aiortc_seam.MediaTap],
) -> None:
    p, offer_tap, answer_tap = pair
    assert not answer_tap.send(0, 160, True, b"\x01" * 160)  # DTLS is not up yet
    async with asyncio.timeout(10):
        while not answer_tap.send(0, 160, True, b"\x01" * 160):
            await asyncio.sleep(0.02)
        while not p.to_offerer:
            await asyncio.sleep(0.01)
    pt, _seq, ts, marker, payload = p.to_offerer[0]
    assert (pt, ts, marker, payload) == (0, 160, True, b"\x01" * 160)
    offer_tap.send(0, 320, False, b"\x02" * 160)
    async with asyncio.timeout(5):
        while not p.to_answerer:
            await asyncio.sleep(0.01)
    assert p.to_answerer[0][4] == b"\x02" * 160
    # Both arrived through the socket-callback shortcut, not aiortc's reader task.
    assert offer_tap.fast_received >= 1 and answer_tap.fast_received >= 1


async def test_malformed_extension_does_not_kill_the_transport(
    pair: tuple[Pair, aiortc_seam.MediaTap, aiortc_seam.MediaTap],
) -> None:
    p = pair[0]
    async with asyncio.timeout(10):
        while p.answerer.connectionState != "connected":
            await asyncio.sleep(0.02)
    transport = p.answerer.getTransceivers()[0].receiver.transport
    extensions = transport._rtp_header_extensions_map
    level_id = extensions._HeaderExtensionsMap__ids.audio_level
    # RFC 6464's audio level is one byte; a two-byte one makes aiortc's own parser raise
    # struct.error (aiortc issues 745, 770, 778), which would close the DTLS transport.
    header = bytes([0x90, 0, 0, 1]) + struct.pack("!II", 1, 5)
    extension = struct.pack("!HH", 0xBEDE, 1) + bytes([(level_id << 4) | 1, 0x7F, 0x7F, 0])
    packet = header + extension + b"\xff" * 160
    with pytest.raises(struct.error):
        RtpPacket.parse(packet, extensions)
    await transport._handle_rtp_data(packet, 0)  # the tap parses it: no exception
    assert p.to_answerer[-1][4] == b"\xff" * 160
    await transport._handle_rtp_data(b"\x80\x00junk", 0)  # too short: dropped quietly


async def test_dormant_track_waits_until_stopped() -> None:
    track = aiortc_seam.DormantTrack()
    pending = asyncio.ensure_future(track.recv())
    await asyncio.sleep(0.05)
    assert not pending.done()
    track.stop()
    with pytest.raises(MediaStreamError):
        await pending


async def test_peer_connections_share_one_certificate_and_its_fingerprints() -> None:
    from aiortc.rtcdtlstransport import RTCCertificate, certificate_digest

    first, second = RTCPeerConnection(), RTCPeerConnection()
    try:
        certificates = [RTCCertificate.generateCertificate() for _ in range(2)]
        assert certificates[0] is certificates[1]
        (fingerprint, *_) = certificates[0].getFingerprints()
        # The cached fingerprint is the certificate's real digest, as the SDP must carry.
        assert fingerprint.value == certificate_digest(certificates[0]._cert, fingerprint.algorithm)
        for pc in (first, second):
            pc.addTransceiver("audio")
        offers = [await pc.createOffer() for pc in (first, second)]
        lines = [next(x for x in o.sdp.splitlines() if "fingerprint:sha-256" in x) for o in offers]
        assert lines[0] == lines[1] and fingerprint.value in lines[0]
    finally:
        await first.close()
        await second.close()


async def test_prefer_codecs_offers_only_those_in_that_order() -> None:
    pc = RTCPeerConnection()
    try:
        aiortc_seam.prefer_codecs(pc.addTransceiver("audio"), ["PCMU", "opus", "pcmu", "nope"])
        offer = (await pc.createOffer()).sdp
        (m_line,) = [line for line in offer.splitlines() if line.startswith("m=audio")]
        rtpmaps = [line.split(" ", 1)[1] for line in offer.splitlines() if "a=rtpmap:" in line]
        assert rtpmaps == ["PCMU/8000", "opus/48000/2"], rtpmaps
        assert m_line.split()[3:] == ["0", "96"], m_line
    finally:
        await pc.close()


def test_fast_copies_equal_deep_copies_and_are_independent() -> None:
    import copy

    import aioice
    from aiortc.rtcpeerconnection import find_common_codecs
    from aiortc.rtcrtpparameters import RTCRtcpFeedback, RTCRtpCodecParameters

    codec = RTCRtpCodecParameters(
        mimeType="audio/opus",
        clockRate=48000,
        channels=2,
        payloadType=111,
        rtcpFeedback=[RTCRtcpFeedback(type="transport-cc")],
        parameters={"minptime": 10, "useinbandfec": 1},
    )
    fast = aiortc_seam._CodecCopy.deepcopy(codec)
    assert fast == copy.deepcopy(codec) and fast is not codec
    fast.parameters["minptime"] = 20
    fast.rtcpFeedback.append(RTCRtcpFeedback(type="nack"))
    assert codec.parameters["minptime"] == 10 and len(codec.rtcpFeedback) == 1
    # aiortc's negotiation goes through the stand-in and still yields fresh codecs.
    remote = [copy.deepcopy(codec)]
    (common,) = find_common_codecs([codec], remote)
    assert common == codec and common is not codec

    candidate = aioice.Candidate.from_sdp("1 1 udp 2130706431 127.0.0.1 40000 typ host")
    clone = aiortc_seam._CandidateCopy.copy(candidate)
    assert clone is not candidate and clone.to_sdp() == candidate.to_sdp()
    clone.host = "127.0.0.2"
    assert candidate.host == "127.0.0.1"
