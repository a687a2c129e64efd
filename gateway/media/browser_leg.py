"""The browser media leg: one aiortc RTCPeerConnection answering the page's offer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

import sdp
from gateway.media import aiortc_seam

log = logging.getLogger(__name__)


class BrowserMediaError(Exception):
    """The browser's offer could not be answered (carries aiortc's reason)."""


@dataclass(frozen=True)
class IceServer:
    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


PacketHandler = Callable[[int, int, int, bool, bytes], None]


class BrowserLeg:
    def __init__(self, ice_servers: tuple[IceServer, ...] = (), *, log_prefix: str = "") -> None:
        config = RTCConfiguration(
            iceServers=[
                RTCIceServer(urls=list(s.urls), username=s.username, credential=s.credential)
                for s in ice_servers
            ]
        )
        self._pc = RTCPeerConnection(configuration=config)
        self._track: aiortc_seam.PacketSourceTrack | None = None
        self.codec: sdp.Codec | None = None
        self.on_packet: PacketHandler | None = None
        self.on_failed: Callable[[], None] | None = None
        self._prefix = log_prefix
        self._pc.on("connectionstatechange", self._on_state)

    @property
    def connection_state(self) -> str:
        return str(self._pc.connectionState)

    def _on_state(self) -> None:
        state = self._pc.connectionState
        log.info("%sbrowser leg %s", self._prefix, state)
        if state == "failed" and self.on_failed is not None:
            self.on_failed()

    async def answer(self, browser_offer: str, codec: sdp.Codec) -> str:
        """Answer the offer with `codec` only, so the browser sends what the SIP leg needs."""
        offer = sdp.restrict_offer(browser_offer, codec)
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            transceiver = next(t for t in self._pc.getTransceivers() if t.kind == "audio")
            self._track = aiortc_seam.PacketSourceTrack(codec.clock_rate)
            transceiver.sender.replaceTrack(self._track)
            if transceiver.direction in ("recvonly", "inactive"):
                transceiver.direction = "sendrecv"
            aiortc_seam.tap_receiver(transceiver.receiver, self._deliver)
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
            aiortc_seam.harden_transport(transceiver.receiver)
        except Exception as exc:
            # aiortc raises a variety of types for offers it dislikes; all mean the same here.
            raise BrowserMediaError(f"cannot answer the browser offer: {exc}") from exc
        self.codec = codec
        return str(self._pc.localDescription.sdp)

    def _deliver(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        if self.on_packet is not None:
            self.on_packet(pt, seq, ts, marker, payload)

    def send(self, payload: bytes, timestamp: int) -> None:
        if self._track is not None:
            self._track.push(payload, timestamp)

    async def close(self) -> None:
        self.on_packet = None
        if self._track is not None:
            self._track.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._pc.close(), 5)
