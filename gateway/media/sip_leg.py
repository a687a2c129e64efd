"""The SIP media leg: plain RTP/AVP over UDP with symmetric RTP (RFC 4961).

RTCP gets its own socket on port + 1 so the port the SDP names answers; its reports are
read and ignored, which every SIP peer here tolerates.

The peer is learnt strictly (Asterisk's strictrtp with probation, rtpengine's
strict-source): packets from the address and port the SDP names are the peer's at once;
another source (a peer behind NAT) becomes the peer only after `probation` consecutive
packets of one stream (same SSRC, consecutive sequence numbers) from it, and once the peer
is learnt, a new source only if it carries the learnt stream's SSRC and passes the same
probation. Everything else is dropped and counted: spraying the RTP range during set-up
must neither receive the caller's voice nor be heard by them. A new SDP address (re-INVITE)
starts the learning again. The SDP's own address always wins back the peer's place.
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


DEFAULT_PROBATION = 4


@dataclass
class LegStats:
    packets_in: int = 0
    packets_out: int = 0
    malformed: int = 0
    foreign: int = 0  # dropped: not from the peer (or still on probation)
    last_rx: float = 0.0


class RtpDrops:
    """Packets dropped by every leg of this process, by reason, for /metrics (process-wide,
    as a Prometheus client's registry is: one gateway per worker process)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {"source": 0, "malformed": 0}

    def add(self, reason: str) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1


DROPPED = RtpDrops()


@dataclass
class _Candidate:
    """A source on probation: one stream, counted while its sequence numbers follow."""

    source: tuple[str, int]
    ssrc: int
    sequence: int
    count: int = 1


class LegClosed(OSError):
    """The leg was closed (its call ended) before `open()` finished."""


class _RtpProtocol(asyncio.DatagramProtocol):
    def __init__(self, leg: SipMediaLeg) -> None:
        self.leg = leg

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        self.leg._on_datagram(data, (str(addr[0]), int(str(addr[1]))))


class _DiscardProtocol(asyncio.DatagramProtocol):
    pass


class SipMediaLeg:
    BIND_ATTEMPTS = 8

    def __init__(
        self,
        host: str,
        allocator: PortAllocator,
        *,
        log_prefix: str = "",
        probation: int = DEFAULT_PROBATION,
    ) -> None:
        self.host = host
        self.probation = max(1, probation)
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
        self._sdp_remote: tuple[str, int] | None = None
        self._learnt = False
        self._learnt_ssrc: int | None = None
        self._candidate: _Candidate | None = None
        self._last_timestamp = 0
        self._prefix = log_prefix
        self._closed = False

    async def open(self) -> None:
        """Bind an RTP/RTCP pair. The call may end (CANCEL, hang-up) while this awaits:
        `close()` then marks the leg closed and whatever this binds afterwards is released
        here, so a port or socket never outlives its call."""
        loop = asyncio.get_running_loop()
        for _ in range(self.BIND_ATTEMPTS):
            if self._closed:
                break
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
            except BaseException:
                self._close_sockets()
                self._allocator.release(port)
                raise
            if self._closed:
                self._close_sockets()
                self._allocator.release(port)
                break
            self.port = port
            return
        if self._closed:
            raise LegClosed("the call ended while its RTP port was being opened")
        raise OSError("could not bind an RTP port pair")

    def set_remote(self, address: str, port: int) -> None:
        """Where the SDP says to send. A new address starts learning again; the same one
        (a session refresh, a codec change) keeps the peer learnt behind its NAT."""
        if self._sdp_remote == (address, port):
            return
        self._sdp_remote = self.remote = (address, port)
        self._learnt = False
        self._learnt_ssrc = None
        self._candidate = None

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
            DROPPED.add("malformed")
            return
        if source != self.remote or not self._learnt:
            if not self._admit(source, header):
                self.stats.foreign += 1
                DROPPED.add("source")
                return
        self._learnt_ssrc = header.ssrc  # the peer may restart its stream in place
        self.stats.packets_in += 1
        self.stats.last_rx = time.monotonic()
        if self.on_packet is not None:
            self.on_packet(header)

    def _admit(self, source: tuple[str, int], header: rtp.RtpHeader) -> bool:
        """Whether a packet from `source` is the peer's; learns the peer as it goes."""
        if source == self._sdp_remote:
            # Where the signalling said: no probation, and it takes the place of a source
            # learnt by probation (which a fast sprayer may have passed first).
            self._learn(source, header.ssrc)
            return True
        if self._learnt and header.ssrc != self._learnt_ssrc:
            return False  # after learning, only the peer's own stream may move
        candidate = self._candidate
        if (
            candidate is not None
            and candidate.source == source
            and candidate.ssrc == header.ssrc
            and header.sequence == (candidate.sequence + 1) & 0xFFFF
        ):
            candidate.sequence = header.sequence
            candidate.count += 1
        else:
            candidate = self._candidate = _Candidate(source, header.ssrc, header.sequence)
        if candidate.count < self.probation:
            return False
        log.info("%sRTP peer learnt at %s:%d after probation", self._prefix, *source)
        self._learn(source, header.ssrc)
        return True

    def _learn(self, source: tuple[str, int], ssrc: int) -> None:
        self.remote = source
        self._learnt = True
        self._learnt_ssrc = ssrc
        self._candidate = None

    def _close_sockets(self) -> None:
        for transport in (self._rtp, self._rtcp):
            if transport is not None:
                transport.close()
        self._rtp = self._rtcp = None

    def close(self) -> None:
        self._closed = True
        self._close_sockets()
        if self.port:
            self._allocator.release(self.port)
            self.port = 0
        self.on_packet = None
