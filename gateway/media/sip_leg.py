"""The SIP media leg: plain RTP/AVP over UDP with symmetric RTP (RFC 4961).

RTCP gets its own socket on port + 1 so the port the SDP names answers; its reports are
read and ignored, which every SIP peer here tolerates.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from gateway.media import rtp
from gateway.media.ports import PortAllocator

log = logging.getLogger(__name__)

PacketHandler = Callable[[rtp.RtpHeader], None]


@dataclass
class LegStats:
    packets_in: int = 0
    packets_out: int = 0
    malformed: int = 0
    foreign: int = 0
    last_rx: float = 0.0


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: SipMediaLeg) -> None:
        self.leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.leg._on_datagram(data, (str(addr[0]), int(str(addr[1]))))


class _DiscardProtocol(asyncio.DatagramProtocol):
    pass


class SipMediaLeg:
    BIND_ATTEMPTS = 8

    def __init__(self, host: str, allocator: PortAllocator, *, log_prefix: str = "") -> None:
        self.host = host
        self._allocator = allocator
        self.port = 0
        self.remote: tuple[str, int] | None = None
        self.on_packet: PacketHandler | None = None
        self.stats = LegStats()
        self._rtp: asyncio.DatagramTransport | None = None
        self._rtcp: asyncio.DatagramTransport | None = None
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self._ts_origin = secrets.randbits(32)
        self._latched = False
        self._last_timestamp = 0
        self._prefix = log_prefix

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        for _ in range(self.BIND_ATTEMPTS):
            port = self._allocator.take()
            try:
                self._rtp, _ = await loop.create_datagram_endpoint(
                    lambda: _RtpProtocol(self), local_addr=(self.host, port)
                )
                self._rtcp, _ = await loop.create_datagram_endpoint(
                    _DiscardProtocol, local_addr=(self.host, port + 1)
                )
            except OSError:
                # Someone outside our allocator holds it (another process): try the next.
                self._close_sockets()
                self._allocator.release(port)
                continue
            self.port = port
            return
        raise OSError("could not bind an RTP port pair")

    def set_remote(self, address: str, port: int) -> None:
        """Where the SDP says to send; replaced by the packets' real source (latching)."""
        self.remote = (address, port)
        self._latched = False

    def next_timestamp(self, clock_rate: int) -> int:
        """Where the media clock stands now, for events sent between audio packets."""
        return self._last_timestamp + clock_rate // 50

    def send(
        self,
        payload: bytes,
        payload_type: int,
        timestamp: int,
        marker: bool = False,
        *,
        audio: bool = True,
    ) -> None:
        if audio:
            self._last_timestamp = timestamp
        if self._rtp is None or self.remote is None:
            return
        self._sequence = (self._sequence + 1) & 0xFFFF
        packet = rtp.build(
            payload_type, self._sequence, self._ts_origin + timestamp, self._ssrc, payload, marker
        )
        self._rtp.sendto(packet, self.remote)
        self.stats.packets_out += 1

    def _on_datagram(self, data: bytes, source: tuple[str, int]) -> None:
        if rtp.is_rtcp(data):
            return
        try:
            header = rtp.parse(data)
        except rtp.RtpError:
            self.stats.malformed += 1
            return
        if not self._latched:
            # Symmetric RTP: answer where the peer really sends from (NAT, or a wrong c=).
            if self.remote != source:
                log.info("%sRTP latched to %s:%d", self._prefix, *source)
            self.remote = source
            self._latched = True
        elif source != self.remote:
            self.stats.foreign += 1
            return
        self.stats.packets_in += 1
        self.stats.last_rx = time.monotonic()
        if self.on_packet is not None:
            self.on_packet(header)

    def _close_sockets(self) -> None:
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None

    def close(self) -> None:
        self._close_sockets()
        if self.port:
            self._allocator.release(self.port)
            self.port = 0
        self.on_packet = None
