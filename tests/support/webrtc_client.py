"""A WebRTC softphone in Python (aiortc) speaking sipgw's browser protocol, for tests.

It sends a continuous tone as its microphone and records what it hears, so a test can
check the frequency of the audio that came back through the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import uuid
from typing import Any

import aiohttp
import av
import numpy as np
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError

from tests.support.audio import dominant_frequency

SAMPLE_RATE = 48000
FRAME = 960  # 20 ms at 48 kHz


class ToneTrack(MediaStreamTrack):  # type: ignore[misc]
    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._pts / SAMPLE_RATE - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        t = (np.arange(FRAME) + self._pts) / SAMPLE_RATE
        samples = (0.3 * 32767 * np.sin(2 * np.pi * self.frequency * t)).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, SAMPLE_RATE)
        self._pts += FRAME
        return frame


class WebRtcClient:
    def __init__(
        self,
        url: str,
        *,
        tone: float = 1000.0,
        codecs: tuple[str, ...] = (),
        user: str | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.tone = tone
        # hello's credentials: a configured user (inbound calls ring its pages) or none.
        self.user = user
        self.token = token
        # MIME subtypes to offer, in order (e.g. ("opus",)); empty: aiortc's defaults.
        self.codecs = codecs
        self.messages: list[dict[str, Any]] = []
        self.received: list[np.ndarray] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self.pc: RTCPeerConnection | None = None
        self.welcome: dict[str, Any] = {}

    async def __aenter__(self) -> WebRtcClient:
        self._session = aiohttp.ClientSession()
        self._ws = await self._session.ws_connect(self.url)
        self._reader = asyncio.create_task(self._read())
        hello: dict[str, Any] = {"type": "hello"}
        if self.user is not None:
            hello["user"] = self.user
        if self.token is not None:
            hello["token"] = self.token
        await self.send(hello)
        self.welcome = await self.expect("welcome")
        return self

    async def __aexit__(self, *exc: object) -> None:
        for task in self._tasks:
            task.cancel()
        if self.pc is not None:
            await self.pc.close()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._session is not None:
            await self._session.close()

    async def _read(self) -> None:
        assert self._ws is not None
        async for msg in self._ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                self.messages.append(data)
                await self._queue.put(data)
        await self._queue.put({"type": "_closed"})

    @property
    def closed(self) -> bool:
        return self._ws is None or self._ws.closed

    async def send(self, message: dict[str, Any]) -> None:
        assert self._ws is not None
        await self._ws.send_str(json.dumps(message))

    async def send_raw(self, text: str) -> None:
        assert self._ws is not None
        await self._ws.send_str(text)

    async def expect(self, *types: str, timeout: float = 10.0) -> dict[str, Any]:
        """The next message of one of these types; others before it are kept in .messages."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self._queue.get()
                if message["type"] in types:
                    return message
                if message["type"] == "_closed":
                    raise ConnectionError("socket closed while waiting for " + "/".join(types))

    def _new_pc(self) -> RTCPeerConnection:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))

        @self.pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            self._tasks.append(asyncio.create_task(self._record(track)))

        return self.pc

    async def make_offer(self) -> str:
        if self.pc is not None:
            await self.pc.close()  # the previous call's, or its sockets stay open
        self.pc = self._new_pc()
        sender = self.pc.addTrack(ToneTrack(self.tone))
        if self.codecs:
            capabilities = RTCRtpSender.getCapabilities("audio").codecs
            wanted = [
                c
                for name in self.codecs
                for c in capabilities
                if c.mimeType.lower() == f"audio/{name.lower()}"
            ]
            transceiver = next(t for t in self.pc.getTransceivers() if t.sender is sender)
            transceiver.setCodecPreferences(wanted)
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def _record(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                pcm = frame.to_ndarray().reshape(-1, len(frame.layout.channels))[:, 0]
                self.received.append((pcm.astype(np.int16), frame.sample_rate))

    async def call(self, to: str, *, sdp: str | None = None) -> str:
        call_id = uuid.uuid4().hex
        offer = sdp if sdp is not None else await self.make_offer()
        await self.send({"type": "call", "id": call_id, "to": to, "sdp": offer})
        return call_id

    async def accept_answer(self, message: dict[str, Any]) -> None:
        assert self.pc is not None
        await self.pc.setRemoteDescription(RTCSessionDescription(message["sdp"], "answer"))

    async def answer_incoming(self, incoming: dict[str, Any]) -> None:
        """Answer an `incoming` message's offer with the tone as microphone, and `accept`.

        As the protocol asks of a page: setRemoteDescription(offer), add the track, answer,
        and send the answer once ICE gathering is complete (aiortc gathers in
        setLocalDescription, so its local description is already complete).
        """
        if self.pc is not None:
            await self.pc.close()
        pc = self._new_pc()
        await pc.setRemoteDescription(RTCSessionDescription(incoming["sdp"], "offer"))
        pc.addTrack(ToneTrack(self.tone))
        await pc.setLocalDescription(await pc.createAnswer())
        await self.send({"type": "accept", "id": incoming["id"], "sdp": pc.localDescription.sdp})

    async def reject(self, incoming: dict[str, Any], code: int | None = None) -> None:
        message: dict[str, Any] = {"type": "reject", "id": incoming["id"]}
        if code is not None:
            message["code"] = code
        await self.send(message)

    def heard_frequency(self, seconds: float = 1.0) -> float:
        if not self.received:
            return 0.0
        rate = self.received[-1][1]
        samples = np.concatenate([pcm for pcm, _ in self.received])
        tail = samples[-int(seconds * rate) :]
        if np.abs(tail.astype(np.int32)).max(initial=0) < 300:
            return 0.0  # silence
        return dominant_frequency(tail, rate)

    async def wait_for_tone(
        self, frequency: float, *, timeout: float = 8.0, tolerance: float = 20.0
    ) -> float:
        """Poll the recording until the tone is heard; returns the last measured frequency."""
        heard = 0.0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while True:
                    await asyncio.sleep(0.25)
                    heard = self.heard_frequency(0.5)
                    if abs(heard - frequency) <= tolerance:
                        return heard
        return heard
