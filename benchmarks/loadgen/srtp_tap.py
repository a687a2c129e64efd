"""The one module that reaches into aiortc 1.16 / aioice 0.13 internals for the load client.

aiortc does ICE and DTLS-SRTP key agreement; once the peer connection is connected we
take its SRTP sessions (`RTCDtlsTransport._rx_srtp`, `._tx_srtp`) and the nominated
aioice candidate pair, and move RTP ourselves: a packet goes out with one `protect` and
one `sendto`, and comes in through the UDP protocol's `datagram_received` with one
`unprotect`, skipping aiortc's per-packet coroutines, queues, jitter buffer and codecs.
That keeps the client several times cheaper per call than the gateway it measures.
STUN (consent checks), DTLS and RTCP still go to aiortc untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from time import monotonic_ns
from typing import Any

import aioice.ice
import av
from aiortc import MediaStreamTrack, RTCPeerConnection

# Decrypted RTP packet and its arrival time (time.monotonic_ns) in.
RtpHandler = Callable[[bytes, int], None]


def loopback_only() -> None:
    """Gather ICE host candidates on 127.0.0.1 only (aioice skips loopback by default)."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]


class IdleTrack(MediaStreamTrack):
    """A send track that never yields a frame, so aiortc's sender loop stays asleep.

    With no track at all aiortc's RTP sender polls every 20 ms; this way it costs nothing
    and the SDP still offers sendrecv with an SSRC we reuse for our own packets.
    """

    kind = "audio"

    def __init__(self) -> None:
        super().__init__()
        self._never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def recv(self) -> av.AudioFrame:
        await self._never
        raise RuntimeError("unreachable")

    def stop(self) -> None:
        if not self._never.done():
            self._never.cancel()
        super().stop()


class SrtpTap:
    """SRTP send/receive on a connected RTCPeerConnection's audio transport."""

    def __init__(self, pc: RTCPeerConnection, on_rtp: RtpHandler) -> None:
        sender = pc.getTransceivers()[0].sender
        dtls = sender.transport
        self.ssrc: int = sender._ssrc
        self._rx = dtls._rx_srtp
        self._tx = dtls._tx_srtp
        if self._rx is None or self._tx is None:
            raise ConnectionError("DTLS-SRTP is not established")
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise ConnectionError("no nominated ICE pair")
        self._protocol: Any = pair.protocol
        self._udp: asyncio.DatagramTransport = pair.protocol.transport
        self._remote: tuple[str, int] = pair.remote_addr
        self._on_rtp = on_rtp
        self._original = self._protocol.datagram_received
        # An instance attribute shadows the method; asyncio and uvloop both look it up
        # on the protocol object for every datagram.
        setattr(self._protocol, "datagram_received", self._datagram_received)  # noqa: B010
        self.decrypt_errors = 0

    def _datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        first = data[0] if data else 0
        # RTP, not RTCP (RFC 5761: RTCP packet types 192-223 sit where RTP's PT+M is).
        if 127 < first < 192 and len(data) > 12 and not 191 < data[1] < 224:
            now = monotonic_ns()
            try:
                plain = self._rx.unprotect(data)
            except Exception:
                self.decrypt_errors += 1
                return
            self._on_rtp(plain, now)
            return
        self._original(data, addr)

    def send(self, rtp_packet: bytes) -> None:
        self._udp.sendto(self._tx.protect(rtp_packet), self._remote)

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            del self._protocol.datagram_received
