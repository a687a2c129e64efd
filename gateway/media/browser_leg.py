"""The browser media leg: one aiortc RTCPeerConnection answering the page's offer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

import sdp
from gateway.media import aiortc_seam
from gateway.media.values import IceServer as IceServer

log = logging.getLogger(__name__)


class BrowserMediaError(Exception):
    """The browser's offer could not be answered (carries aiortc's reason)."""


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
        self._track: aiortc_seam.DormantTrack | None = None
        self._tap: aiortc_seam.MediaTap | None = None
        self._first = True
        self.codec: sdp.Codec | None = None
        self.on_packet: PacketHandler | None = None
        self.on_failed: Callable[[], None] | None = None
        self._prefix = log_prefix
        self._closed = False
        # Held by each SDP step: close() waits for the one in flight, since aiortc's close
        # during ICE gathering leaves the sockets gathered after it open for good.
        self._step = asyncio.Lock()
        self._pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        state = self._pc.connectionState
        log.debug("%sbrowser leg %s", self._prefix, state)
        if state == "failed" and self.on_failed is not None:
            self.on_failed()

    async def answer(self, browser_offer: str, codec: sdp.Codec) -> str:
        """Answer the offer with `codec` only, so the browser sends what the SIP leg needs."""
        try:
            sdp.check_webrtc(browser_offer)
        except sdp.SdpError as exc:
            raise BrowserMediaError(f"unusable browser offer: {exc}") from exc
        offer = sdp.restrict_offer(browser_offer, codec)
        async with self._step:
            return await self._answer(offer, codec)

    async def _answer(self, offer: str, codec: sdp.Codec) -> str:
        try:
            await self._pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            transceiver = next(t for t in self._pc.getTransceivers() if t.kind == "audio")
            self._track = aiortc_seam.DormantTrack()
            transceiver.sender.replaceTrack(self._track)
            if transceiver.direction in ("recvonly", "inactive"):
                transceiver.direction = "sendrecv"
            self._tap = aiortc_seam.MediaTap(transceiver, self._deliver)
            answer = await self._pc.createAnswer()
            await self._pc.setLocalDescription(answer)
            self._tap.install()
        except Exception as exc:
            # aiortc raises a variety of types for offers it dislikes; all mean the same here.
            raise BrowserMediaError(f"cannot answer the browser offer: {exc}") from exc
        self.codec = codec
        return str(self._pc.localDescription.sdp)

    async def offer(self, codecs: Sequence[str]) -> str:
        """Offer audio with these codecs (names, preferred first) for an inbound call."""
        async with self._step:
            return await self._offer(codecs)

    async def _offer(self, codecs: Sequence[str]) -> str:
        try:
            self._track = aiortc_seam.DormantTrack()
            sender = self._pc.addTrack(self._track)
            transceiver = next(t for t in self._pc.getTransceivers() if t.sender is sender)
            aiortc_seam.prefer_codecs(transceiver, codecs)
            self._tap = aiortc_seam.MediaTap(transceiver, self._deliver)
            await self._pc.setLocalDescription(await self._pc.createOffer())
            self._tap.install()
        except Exception as exc:
            raise BrowserMediaError(f"cannot make an offer: {exc}") from exc
        return str(self._pc.localDescription.sdp)

    async def accept_answer(self, answer: str) -> sdp.Codec:
        """Apply the page's answer; returns the codec it chose (its first one)."""
        try:
            sdp.check_webrtc(answer)
            chosen = sdp.parse_remote(answer).codec
        except sdp.SdpError as exc:
            raise BrowserMediaError(f"unusable answer from the page: {exc}") from exc
        try:
            async with self._step:
                await self._pc.setRemoteDescription(
                    RTCSessionDescription(sdp=answer, type="answer")
                )
                assert self._tap is not None
                self._tap.install()
        except Exception as exc:
            raise BrowserMediaError(f"cannot apply the page's answer: {exc}") from exc
        self.codec = chosen
        return chosen

    def _deliver(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        if self.on_packet is not None:
            self.on_packet(pt, seq, ts, marker, payload)

    def send(self, payload: bytes, timestamp: int) -> None:
        if self._tap is None or self.codec is None:
            return
        # The first packet of the stream carries the marker bit (RFC 3551 section 4.1).
        if self._tap.send(self.codec.payload_type, timestamp, self._first, payload):
            self._first = False

    async def close(self) -> None:
        """Idempotent: a call's set-up and its end may both close the leg."""
        if self._closed:
            return
        self._closed = True
        self.on_packet = None
        if self._tap is not None:
            self._tap.close()
        if self._track is not None:
            self._track.stop()
        try:
            await asyncio.wait_for(self._step.acquire(), 5)
            acquired = True
        except TimeoutError:
            acquired = False  # a step that hangs must not keep the connection open
        try:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._pc.close(), 5)
        finally:
            if acquired:
                self._step.release()
        aiortc_seam.stop_leftover_ice(self._pc)
