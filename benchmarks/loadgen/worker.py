"""One load-generator process: a share of the calls on one (uvloop) event loop.

The parent starts workers with multiprocessing (spawn), waits until each has imported
everything and said "ready", then sends the shared timeline. Times are
time.monotonic_ns(), which every process on a Linux host reads from the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import struct
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from typing import Any, Literal

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from benchmarks.loadgen import media
from benchmarks.loadgen.signalling import GatewayKind, make_signalling
from benchmarks.loadgen.srtp_tap import IdleTrack, SrtpTap, loopback_only
from benchmarks.loadgen.stats import LATE_NS, CallStats, Histogram

Codec = Literal["pcmu", "opus"]
TICK_NS = 4_000_000  # calls are spread over 5 phases of a 20 ms period
PHASES = 5
_TS = struct.Struct("!I")


@dataclass(frozen=True)
class WorkerPlan:
    worker: int
    kind: GatewayKind
    url: str  # sipgw: ws://.../ws; janus: ws://host:port/
    target: str  # sipgw: the number to dial; janus: the SIP URI
    codec: Codec
    calls: tuple[int, ...]  # global call indices (their ramp slots)
    rate: float  # calls per second, over all workers
    setup_timeout: float = 15.0


@dataclass(frozen=True)
class Timeline:
    t0_ns: int  # the ramp starts: call i starts at t0 + i / rate
    window_start_ns: int
    window_end_ns: int  # sending stops
    stop_ns: int  # late packets are in; calls hang up


class CallFlow:
    """The media of one connected call: send stamped packets, match the ones that return."""

    def __init__(
        self, stats: CallStats, tap_factory: Any, pt: int, codec: Codec, timeline: Timeline
    ):
        self.stats = stats
        self.pt = pt
        self.codec = codec
        self.timeline = timeline
        self.hist: Histogram | None = None
        self.tap: SrtpTap = tap_factory(self.on_rtp)
        self.seq = 0
        self.rtp_seq = 0
        self.ts = 0
        self.step = 160 if codec == "pcmu" else 960
        self.opus: list[bytes] = []
        self.send_times: list[int] = []  # opus: send time of frame k
        self.first_rx_ts: int | None = None

    def send(self, now: int) -> None:
        if self.codec == "pcmu":
            payload = media.pcmu_payload(now, self.seq)
        else:
            payload = self.opus[self.seq % len(self.opus)]
            self.send_times.append(now)
        self.tap.send(media.rtp_packet(self.pt, self.rtp_seq, self.ts, self.tap.ssrc, payload))
        self.seq += 1
        self.rtp_seq += 1
        self.ts += self.step
        if self.timeline.window_start_ns <= now < self.timeline.window_end_ns:
            self.stats.sent += 1

    def on_rtp(self, packet: bytes, rx_ns: int) -> None:
        offset = media.rtp_payload_offset(packet)
        if offset < 0:
            return
        if self.codec == "pcmu":
            if len(packet) < offset + media.STAMP.size:
                return
            tx_ns, _ = media.STAMP.unpack_from(packet, offset)
        else:
            (ts,) = _TS.unpack_from(packet, 4)
            if self.first_rx_ts is None:
                self.first_rx_ts = ts
            k = ((ts - self.first_rx_ts) & 0xFFFFFFFF) // 960
            if k >= len(self.send_times):
                return
            tx_ns = self.send_times[k]
        if not self.timeline.window_start_ns <= tx_ns < self.timeline.window_end_ns:
            return
        self.stats.received += 1
        one_way = (rx_ns - tx_ns) // 2
        if one_way > LATE_NS:
            self.stats.late += 1
        if self.hist is not None:
            self.hist.add_ns(one_way)


def _payload_type(answer: str, codec: Codec) -> int:
    wanted = "pcmu/8000" if codec == "pcmu" else "opus/48000"
    for line in answer.splitlines():
        if line.startswith("a=rtpmap:") and line.split(" ", 1)[1].lower().startswith(wanted):
            return int(line[9:].split(" ", 1)[0])
    raise ValueError(f"the answer has no {codec}")


class Worker:
    def __init__(self, plan: WorkerPlan, timeline: Timeline) -> None:
        self.plan = plan
        self.timeline = timeline
        self.hist = Histogram()
        self.stats = [CallStats(index) for index in plan.calls]
        self.phases: list[set[CallFlow]] = [set() for _ in range(PHASES)]
        self.opus = media.opus_frames() if plan.codec == "opus" else []
        self.cpu_window: list[float] = []

    def _cpu(self) -> float:
        times = os.times()
        return times.user + times.system

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        ticker = asyncio.create_task(self._tick())
        offset = time.monotonic() - time.monotonic_ns() / 1e9
        loop.call_at(self.timeline.window_start_ns / 1e9 + offset, self._mark_cpu)
        loop.call_at(self.timeline.window_end_ns / 1e9 + offset, self._mark_cpu)
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as http:
            await asyncio.gather(
                *(self._call(http, stats) for stats in self.stats), return_exceptions=True
            )
        ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ticker

    def _mark_cpu(self) -> None:
        self.cpu_window.append(self._cpu())

    async def _tick(self) -> None:
        phase = 0
        next_ns = time.monotonic_ns()
        while True:
            now = time.monotonic_ns()
            if now < self.timeline.window_end_ns:
                for flow in self.phases[phase]:
                    flow.send(now)
            phase = (phase + 1) % PHASES
            next_ns += TICK_NS
            delay = next_ns - time.monotonic_ns()
            if delay < -TICK_NS * PHASES:
                next_ns = time.monotonic_ns()  # overloaded: skip rather than burst
            await asyncio.sleep(max(0, delay) / 1e9)

    async def _call(self, http: aiohttp.ClientSession, stats: CallStats) -> None:
        plan, timeline = self.plan, self.timeline
        await _sleep_until(timeline.t0_ns + int(stats.index / plan.rate * 1e9))
        signalling = make_signalling(plan.kind, http, plan.url, plan.target)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        flow: CallFlow | None = None
        try:
            await signalling.open()
            sender = pc.addTrack(IdleTrack())
            wanted = "audio/pcmu" if plan.codec == "pcmu" else "audio/opus"
            caps = [
                c
                for c in RTCRtpSender.getCapabilities("audio").codecs
                if c.mimeType.lower() == wanted
            ]
            transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
            transceiver.setCodecPreferences(caps)
            await pc.setLocalDescription(await pc.createOffer())
            started = time.monotonic_ns()
            answer = await signalling.call(pc.localDescription.sdp, plan.setup_timeout)
            answered = time.monotonic_ns()
            stats.setup_ms = (answered - started) / 1e6
            connected = asyncio.Event()
            pc.on("connectionstatechange", connected.set)
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            async with asyncio.timeout(plan.setup_timeout):
                while pc.connectionState != "connected":
                    if pc.connectionState in ("failed", "closed"):
                        raise ConnectionError(f"peer connection {pc.connectionState}")
                    connected.clear()
                    await connected.wait()
            stats.connect_ms = (time.monotonic_ns() - answered) / 1e6
            flow = CallFlow(
                stats,
                lambda handler: SrtpTap(pc, handler),
                _payload_type(answer, plan.codec),
                plan.codec,
                timeline,
            )
            flow.opus = self.opus
            flow.hist = self.hist
            self.phases[stats.index % PHASES].add(flow)
            await _sleep_until(timeline.stop_ns)
        except Exception as exc:
            stats.error = f"{type(exc).__name__}: {exc}"[:200]
        finally:
            if flow is not None:
                self.phases[stats.index % PHASES].discard(flow)
                stats.decrypt_errors = flow.tap.decrypt_errors
                flow.tap.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(signalling.hangup(), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5)
            with contextlib.suppress(Exception):
                await signalling.close()

    def result(self) -> dict[str, Any]:
        cpu = self.cpu_window[1] - self.cpu_window[0] if len(self.cpu_window) == 2 else None
        return {
            "worker": self.plan.worker,
            "pid": os.getpid(),
            "cpu_window_s": cpu,
            "calls": [s.to_json() for s in self.stats],
            "histogram": list(self.hist.counts),
        }


async def _sleep_until(at_ns: int) -> None:
    delay = at_ns - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


def worker_main(plan: WorkerPlan, conn: Connection, results: Queue[Any]) -> None:
    """multiprocessing entry point."""
    import uvloop

    loopback_only()
    results.put(("ready", plan.worker, None))
    timeline: Timeline = conn.recv()
    worker = Worker(plan, timeline)
    try:
        uvloop.run(worker.run())
    finally:
        results.put(("result", plan.worker, worker.result()))
