"""The one module that touches aiortc and aioice internals (pinned to aiortc 1.16.x).

The gateway keeps aiortc for ICE, DTLS and SRTP, but moves encoded RTP payloads itself:
incoming packets are taken from the receiver before aiortc's jitter buffer (which adds
80-280 ms) and decoder thread, and outgoing payloads enter the sender as pre-encoded
av.Packets, which aiortc only packetises. The performance work replaces what is behind
`PacketSink`/`PacketSourceTrack` without touching the rest of the gateway.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCRtpReceiver, RTCRtpSender
from aiortc.mediastreams import MediaStreamError

log = logging.getLogger(__name__)

# (payload type, sequence number, timestamp, marker, payload)
PacketSink = Callable[[int, int, int, bool, bytes], None]

_original_get_host_addresses = aioice.ice.get_host_addresses
_ice_addresses: list[str] | None = None


def configure_ice_addresses(addresses: Sequence[str] | None) -> None:
    """Offer ICE host candidates on exactly these addresses (None: aioice's own choice).

    aioice never gathers loopback addresses and otherwise gathers every interface; a
    gateway wants its public or chosen interface, and tests want 127.0.0.1 only.
    This is process-wide because aioice reads it from a module function.
    """
    global _ice_addresses
    _ice_addresses = list(addresses) if addresses else None
    aioice.ice.get_host_addresses = _host_addresses


def _host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    if _ice_addresses is None:
        return _original_get_host_addresses(use_ipv4, use_ipv6)
    return [a for a in _ice_addresses if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]


class PacketSourceTrack(MediaStreamTrack):
    """An audio track that hands aiortc already-encoded payloads, paced by their arrival."""

    kind = "audio"
    QUEUE_LIMIT = 10  # 200 ms: beyond that old audio is worse than a gap

    def __init__(self, clock_rate: int = 48000) -> None:
        super().__init__()
        self._time_base = fractions.Fraction(1, clock_rate)
        self._queue: asyncio.Queue[av.Packet[Any] | None] = asyncio.Queue()

    def set_clock_rate(self, clock_rate: int) -> None:
        """When we offer, the codec (and so the RTP clock) is known only from the answer."""
        self._time_base = fractions.Fraction(1, clock_rate)

    def push(self, payload: bytes, timestamp: int) -> None:
        if self.readyState != "live":
            return
        if self._queue.qsize() >= self.QUEUE_LIMIT:
            self._queue.get_nowait()
        packet = av.Packet(payload)
        packet.pts = timestamp
        packet.time_base = self._time_base
        self._queue.put_nowait(packet)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        packet = await self._queue.get()
        if packet is None:
            raise MediaStreamError
        return packet

    def stop(self) -> None:
        if self.readyState == "live":
            self._queue.put_nowait(None)
        super().stop()


def prefer_codecs(transceiver: Any, names: Sequence[str]) -> None:
    """Offer only these codecs (by name, in order) on an aiortc transceiver we offer from."""
    capabilities = RTCRtpSender.getCapabilities("audio").codecs
    wanted = [
        c for name in names for c in capabilities if c.mimeType.lower() == f"audio/{name.lower()}"
    ]
    if wanted:
        transceiver.setCodecPreferences(wanted)


def tap_receiver(receiver: RTCRtpReceiver, sink: PacketSink) -> None:
    """Deliver the receiver's decrypted RTP to `sink` instead of its jitter buffer."""

    async def handle(packet: Any, arrival_time_ms: int) -> None:
        try:
            sink(
                packet.payload_type,
                packet.sequence_number,
                packet.timestamp,
                bool(packet.marker),
                packet.payload,
            )
        except Exception:
            log.exception("browser packet handler failed")

    receiver._handle_rtp_packet = handle  # type: ignore[method-assign]


def harden_transport(receiver: RTCRtpReceiver) -> None:
    """Survive aiortc issue 745/770/778: a bad header extension raises struct.error in
    RtpPacket.parse, which escapes _handle_rtp_data and kills the DTLS transport."""
    transport = receiver.transport
    original = transport._handle_rtp_data

    async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
        try:
            await original(data, arrival_time_ms)
        except (struct.error, ValueError, IndexError) as exc:
            log.debug("dropped malformed SRTP-decrypted RTP packet: %s", exc)

    transport._handle_rtp_data = handle_rtp_data  # type: ignore[method-assign]
