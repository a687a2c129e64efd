#!/usr/bin/env python3
"""A command-line WebRTC client for sipgw: call a number, or answer, from a terminal.

It speaks the browser protocol (docs/protocol.md) over the gateway's WebSocket and sends
real WebRTC audio (aiortc), so it exercises the same path as the softphone page. Uses:
smoke tests after a deployment, monitoring (a cron job or a Nagios/Prometheus blackbox
check that calls a tone or echo extension and checks what comes back), and load tests
with a handful of calls.

    python3 examples/sipgw_client.py --url ws://127.0.0.1:8080/ws --dial 601 \\
        --duration 3 --record heard.wav --expect-tone 440
    python3 examples/sipgw_client.py --url wss://phone.example.com/ws --user alice \\
        --password s3cret --dial 600 --tone 1000 --expect-tone 1000
    python3 examples/sipgw_client.py --url wss://phone.example.com/ws --user alice \\
        --password s3cret --answer --play greeting.wav --duration 30

Every message from the gateway is printed to stdout as one JSON line after `<- ` (SDP
bodies shortened unless --show-sdp); what the client sends is printed after `-> `; status
and errors go to stderr.

Exit status: 0 the call connected and ended normally (and --expect-tone matched);
1 the gateway could not be reached, refused the sign-in, or the call failed or was not
connected in time; 2 wrong arguments or an unreadable --play file; 3 the call worked but
--expect-tone did not hear the tone. Needs aiortc and aiohttp (pip install aiortc aiohttp).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import math
import re
import signal
import ssl
import sys
import uuid
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiohttp
import aioice.ice
import av
import numpy as np
import numpy.typing as npt
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCIceServer,
    RTCIceTransportPolicy,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import MediaStreamError
from aiortc.sdp import candidate_from_sdp

Samples = npt.NDArray[np.int16]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_WRONG_TONE = 3

PTIME = 0.02  # seconds of audio per frame we send
RECORD_RATE = 48000  # what we hear is recorded as mono 16-bit at this rate
SILENCE_RMS = 100.0  # int16 RMS under which audio counts as silence (about -50 dBFS)
LOWEST_TONE_HZ = 20.0
ANALYSIS_SECONDS = 2.0
HANGUP_WAIT = 5.0  # how long to wait for the gateway to confirm our hangup
DTMF_DIGITS = re.compile(r"[0-9*#A-D]{1,64}")


class Failure(Exception):
    """The call could not be made or went wrong; the message says why."""


def say(text: str) -> None:
    print(f"sipgw_client: {text}", file=sys.stderr, flush=True)


# --- ICE on loopback -------------------------------------------------------------------


def use_ice_addresses(addresses: Sequence[str]) -> None:
    """Offer ICE host candidates on exactly these addresses.

    aioice (aiortc's ICE) lists host addresses with `aioice.ice.get_host_addresses`, which
    deliberately skips 127.0.0.1 and ::1. In a network namespace that has only loopback
    (`unshare -n`), or to keep a test's traffic on 127.0.0.1, it would gather nothing and
    no call could connect. aioice looks the function up in its module on every gathering,
    so replacing the module attribute is enough; sipgw does the same for its own side
    (media.ice_addresses).
    """
    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (use_ipv6 if ":" in a else use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


# --- what we send: a tone or a WAV file, paced in real time -----------------------------


class Source:
    """Mono 16-bit samples at a fixed rate, handed out block by block."""

    def __init__(self, rate: int) -> None:
        self.rate = rate

    def block(self, count: int) -> Samples:
        raise NotImplementedError


class ToneSource(Source):
    def __init__(self, frequency: float, rate: int = 48000, amplitude: float = 0.3) -> None:
        super().__init__(rate)
        self.frequency = frequency
        self.amplitude = amplitude
        self._position = 0

    def block(self, count: int) -> Samples:
        t = (np.arange(count) + self._position) / self.rate
        self._position += count
        wave_ = self.amplitude * 32767 * np.sin(2 * np.pi * self.frequency * t)
        return wave_.astype(np.int16)


class WavSource(Source):
    """A 16-bit PCM WAV file (channels mixed to mono), looped or played once then silence."""

    def __init__(self, path: Path, *, loop: bool) -> None:
        try:
            with wave.open(str(path), "rb") as src:
                width, channels, rate = src.getsampwidth(), src.getnchannels(), src.getframerate()
                raw = src.readframes(src.getnframes())
        except (OSError, EOFError, wave.Error) as exc:
            raise ValueError(f"cannot read {path}: {exc}") from None
        if width != 2:
            raise ValueError(
                f"{path} has {8 * width}-bit samples; convert it to 16-bit PCM "
                f"(sox {path} -b 16 out.wav)"
            )
        super().__init__(rate)
        interleaved = np.frombuffer(raw, dtype="<i2")
        interleaved = interleaved[: len(interleaved) - len(interleaved) % channels]
        mono = interleaved.reshape(-1, channels).astype(np.int32).mean(axis=1)
        self.samples: Samples = mono.astype(np.int16)
        if len(self.samples) == 0:
            raise ValueError(f"{path} holds no audio")
        self.loop = loop
        self._position = 0

    def block(self, count: int) -> Samples:
        out = np.zeros(count, dtype=np.int16)
        filled = 0
        while filled < count:
            if self._position >= len(self.samples):
                if not self.loop:
                    break  # the rest stays silence
                self._position = 0
            take = min(count - filled, len(self.samples) - self._position)
            out[filled : filled + take] = self.samples[self._position : self._position + take]
            filled += take
            self._position += take
        return out


class SourceTrack(MediaStreamTrack):
    """An audio track that plays a Source at the pace of a real microphone."""

    kind = "audio"

    def __init__(self, source: Source) -> None:
        super().__init__()
        self.source = source
        self.frame_size = max(1, round(source.rate * PTIME))
        self._pts = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        wait = self._start + self._pts / self.source.rate - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        samples = self.source.block(self.frame_size)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.source.rate
        frame.pts = self._pts
        frame.time_base = fractions.Fraction(1, self.source.rate)
        self._pts += self.frame_size
        return frame


# --- what we hear: kept for the tone check, optionally written to a WAV -----------------


class Recorder:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.chunks: list[Samples] = []
        self.count = 0
        self._wav: wave.Wave_write | None = None
        # Decoders hand out 48 kHz stereo (Opus) or 8/16 kHz mono (G.711, G.722): one
        # format for the file and the analysis whatever the codec.
        self._resampler = av.AudioResampler(format="s16", layout="mono", rate=RECORD_RATE)
        self._task: asyncio.Task[None] | None = None

    def start(self, track: MediaStreamTrack) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(track))

    async def _run(self, track: MediaStreamTrack) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if not isinstance(frame, av.AudioFrame):
                    continue
                for out in self._resampler.resample(frame):
                    self._add(out.to_ndarray().reshape(-1).astype(np.int16))

    def _add(self, samples: Samples) -> None:
        self.chunks.append(samples)
        self.count += len(samples)
        if self.path is not None:
            if self._wav is None:
                self._wav = wave.open(str(self.path), "wb")
                self._wav.setnchannels(1)
                self._wav.setsampwidth(2)
                self._wav.setframerate(RECORD_RATE)
            self._wav.writeframes(samples.astype("<i2").tobytes())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._wav is None and self.path is not None:
            # Nothing heard: still leave a valid, empty WAV, so scripts find the file.
            self._wav = wave.open(str(self.path), "wb")
            self._wav.setnchannels(1)
            self._wav.setsampwidth(2)
            self._wav.setframerate(RECORD_RATE)
        if self._wav is not None:
            self._wav.close()

    def samples(self, upto: int | None = None) -> Samples:
        if not self.chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(self.chunks)[:upto]


def rms(samples: Samples) -> float:
    if len(samples) == 0:
        return 0.0
    return float(np.sqrt(np.mean(np.square(samples.astype(np.float64)))))


def dominant_frequency(samples: Samples, rate: int) -> float:
    """The strongest spectral peak above 20 Hz (Hann window, parabolic interpolation)."""
    signal_ = samples.astype(np.float64)
    signal_ -= signal_.mean()
    spectrum = np.abs(np.fft.rfft(signal_ * np.hanning(len(signal_))))
    bin_hz = rate / len(signal_)
    first = max(1, math.ceil(LOWEST_TONE_HZ / bin_hz))
    if first >= len(spectrum) - 1:
        return 0.0
    peak = first + int(np.argmax(spectrum[first:]))
    offset = 0.0
    if first < peak < len(spectrum) - 1:
        left, centre, right = np.log(spectrum[peak - 1 : peak + 2] + 1e-12)
        denominator = left - 2.0 * centre + right
        if denominator != 0.0:
            offset = float(0.5 * (left - right) / denominator)
    return (peak + offset) * bin_hz


def analyse(samples: Samples, rate: int) -> tuple[float, float] | None:
    """(frequency, dBFS) of the last ANALYSIS_SECONDS of sound, or None for silence.

    Leading silence is skipped: an echo or a far end that starts late must not drown
    the tone in zeros.
    """
    block = rate // 50
    start = 0
    while start + block <= len(samples) and rms(samples[start : start + block]) < SILENCE_RMS:
        start += block
    sound = samples[start:]
    tail = sound[-round(ANALYSIS_SECONDS * rate) :]
    if len(tail) < rate // 10 or rms(tail) < SILENCE_RMS:
        return None
    return dominant_frequency(tail, rate), 20 * math.log10(rms(tail) / 32768)


# --- the protocol ------------------------------------------------------------------------


def shown(message: dict[str, Any], full_sdp: bool) -> str:
    if not full_sdp and isinstance(message.get("sdp"), str):
        message = {**message, "sdp": f"<{len(message['sdp'])} bytes of SDP>"}
    return json.dumps(message)


def describe_end(message: dict[str, Any]) -> str:
    if message["type"] == "hangup":
        return f"{message.get('reason')} ({message.get('code')})"
    return f"{message.get('code')}: {message.get('message')}"


def ice_configuration(welcome: dict[str, Any]) -> RTCConfiguration:
    """Exactly the welcome's iceServers: an empty list must not become aiortc's Google STUN."""
    servers = []
    entries = welcome.get("iceServers")
    for entry in entries if isinstance(entries, list) else []:
        if not isinstance(entry, dict) or not isinstance(entry.get("urls"), str | list):
            say(f"ignoring an iceServers entry without urls: {entry!r}")
            continue
        servers.append(
            RTCIceServer(
                urls=entry["urls"],
                username=entry.get("username"),
                credential=entry.get("credential"),
            )
        )
    policy = (
        RTCIceTransportPolicy.RELAY
        if welcome.get("iceTransportPolicy") == "relay"
        else RTCIceTransportPolicy.ALL
    )
    return RTCConfiguration(iceServers=servers, iceTransportPolicy=policy)


def tls(args: argparse.Namespace) -> ssl.SSLContext | bool:
    """Verified TLS for wss://, against the system's CAs or --cafile (a private CA)."""
    if args.cafile is None:
        return True
    return ssl.create_default_context(cafile=str(args.cafile))


class Client:
    def __init__(self, args: argparse.Namespace, source: Source) -> None:
        self.args = args
        self.source = source
        self.recorder = Recorder(args.record)
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.pc: RTCPeerConnection | None = None
        self.welcome: dict[str, Any] = {}
        self.call_id: str | None = None
        self.remote_set = False
        self.pending_candidates: list[dict[str, Any]] = []
        self.heard_upto: int | None = None

    # Messages from the socket, a closed socket and Ctrl-C all arrive through one queue,
    # so every wait below is one `get` with a deadline.
    async def read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                continue
            try:
                message = json.loads(msg.data)
            except ValueError:
                say(f"ignoring a frame that is not JSON: {msg.data[:80]!r}")
                continue
            if isinstance(message, dict) and isinstance(message.get("type"), str):
                print("<- " + shown(message, self.args.show_sdp), flush=True)
                await self.queue.put(message)
        await self.queue.put({"type": "_closed"})

    def interrupt(self) -> None:
        self.queue.put_nowait({"type": "_interrupted"})

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        print("-> " + shown(message, self.args.show_sdp), flush=True)
        await self.ws.send_str(json.dumps(message))

    async def next(self, deadline: float | None) -> dict[str, Any] | None:
        """The next message, or None at the deadline (loop time; None: no deadline)."""
        loop = asyncio.get_running_loop()
        timeout = None if deadline is None else max(0.0, deadline - loop.time())
        try:
            async with asyncio.timeout(timeout):
                message = await self.queue.get()
        except TimeoutError:
            return None
        if message["type"] == "_closed":
            raise Failure("the gateway closed the WebSocket")
        if message["type"] == "candidate" and message.get("id") == self.call_id:
            await self.add_candidate(message.get("candidate"))
        return message

    def setup_deadline(self) -> float | None:
        timeout: float = self.args.timeout
        return asyncio.get_running_loop().time() + timeout if timeout > 0 else None

    # --- steps of a call -----------------------------------------------------------------

    async def sign_in(self) -> None:
        hello: dict[str, Any] = {"type": "hello"}
        if self.args.user:
            hello["user"] = self.args.user
        if self.args.password:
            hello["token"] = self.args.password
        await self.send(hello)
        deadline = self.setup_deadline()
        while True:
            message = await self.next(deadline)
            if message is None:
                raise Failure("no welcome from the gateway in time")
            if message["type"] == "_interrupted":
                raise Failure("interrupted")
            if message["type"] == "welcome":
                self.welcome = message
                return
            if message["type"] == "error":
                raise Failure(f"sign-in refused: {message.get('code')}: {message.get('message')}")

    def new_pc(self) -> RTCPeerConnection:
        pc = RTCPeerConnection(ice_configuration(self.welcome))
        self.pc = pc

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            if track.kind == "audio":
                self.recorder.start(track)

        return pc

    async def set_remote(self, sdp: str, kind: str) -> None:
        assert self.pc is not None
        try:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
        except ValueError as exc:  # aiortc's complaint about an unusable description
            raise Failure(f"cannot use the gateway's SDP: {exc}") from None
        self.remote_set = True
        for candidate in self.pending_candidates:
            await self.add_candidate(candidate)
        self.pending_candidates.clear()

    async def add_candidate(self, candidate: object) -> None:
        """Relayed candidates (browser-to-browser calls): applied once the remote SDP is."""
        if not isinstance(candidate, dict) or not isinstance(candidate.get("candidate"), str):
            return  # null (end of candidates) or malformed: nothing to add
        if not self.remote_set or self.pc is None:
            self.pending_candidates.append(candidate)
            return
        line = candidate["candidate"].removeprefix("a=").removeprefix("candidate:")
        if not line:
            return
        try:
            parsed = candidate_from_sdp(line)
            parsed.sdpMid = candidate.get("sdpMid")
            parsed.sdpMLineIndex = candidate.get("sdpMLineIndex")
            await self.pc.addIceCandidate(parsed)
        except (ValueError, IndexError) as exc:
            say(f"ignoring a candidate aiortc cannot use ({exc}): {line}")

    async def dial(self, number: str) -> None:
        pc = self.new_pc()
        pc.addTrack(SourceTrack(self.source))
        # aiortc gathers every candidate inside setLocalDescription: the SDP is complete.
        await pc.setLocalDescription(await pc.createOffer())
        self.call_id = uuid.uuid4().hex
        await self.send(
            {"type": "call", "id": self.call_id, "to": number, "sdp": pc.localDescription.sdp}
        )
        deadline = self.setup_deadline()
        while True:
            message = await self.next(deadline)
            if message is None:
                raise Failure(f"not answered within {self.args.timeout:g} s")
            kind = message["type"]
            if kind == "_interrupted":
                raise Failure("interrupted before the answer")
            if message.get("id") != self.call_id:
                continue
            if kind in ("progress", "answer") and isinstance(message.get("sdp"), str):
                # The first description wins; the gateway keeps the browser leg as it is.
                if not self.remote_set:
                    await self.set_remote(message["sdp"], "answer")
            if kind == "answer":
                if not self.remote_set:
                    raise Failure("answer without SDP")
                return
            if kind == "hangup" or (
                kind == "error" and message.get("code") not in ("bad-state", "not-allowed")
            ):
                self.call_id = None  # the gateway has ended it: nothing to hang up
                raise Failure(f"call failed: {describe_end(message)}")

    async def answer(self) -> None:
        deadline = self.setup_deadline()
        say("waiting for an incoming call")
        while True:
            message = await self.next(deadline)
            if message is None:
                raise Failure(f"no call connected within {self.args.timeout:g} s")
            kind = message["type"]
            if kind == "_interrupted":
                raise Failure("interrupted while waiting for a call")
            if kind == "incoming" and self.call_id is None:
                if not isinstance(message.get("sdp"), str) or not isinstance(
                    message.get("id"), str
                ):
                    say("ignoring an incoming message without id or sdp")
                    continue
                self.call_id = message["id"]
                caller = f"{message.get('from')}"
                if message.get("fromName"):
                    caller = f"{message['fromName']} <{caller}>"
                say(f"call from {caller}")
                self.new_pc()
                await self.set_remote(message["sdp"], "offer")
                assert self.pc is not None
                self.pc.addTrack(SourceTrack(self.source))
                await self.pc.setLocalDescription(await self.pc.createAnswer())
                await self.send(
                    {"type": "accept", "id": self.call_id, "sdp": self.pc.localDescription.sdp}
                )
            elif kind == "incoming":
                await self.send({"type": "reject", "id": message.get("id"), "code": 486})
            elif message.get("id") != self.call_id or self.call_id is None:
                continue
            elif kind == "answer":
                return
            elif kind == "hangup" or (
                kind == "error" and message.get("code") not in ("bad-state", "not-allowed")
            ):
                self.call_id = None
                raise Failure(f"call not connected: {describe_end(message)}")

    async def talk(self) -> bool:
        """Stay in the connected call for --duration s; False if the far end ended it badly."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.args.duration
        dtmf_at = loop.time() + self.args.dtmf_delay if self.args.dtmf else None
        while True:
            wake = deadline if dtmf_at is None else min(deadline, dtmf_at)
            message = await self.next(wake)
            if message is None:
                if dtmf_at is not None and loop.time() >= dtmf_at:
                    await self.send({"type": "dtmf", "id": self.call_id, "digits": self.args.dtmf})
                    dtmf_at = None
                    continue
                break
            kind = message["type"]
            if kind == "_interrupted":
                say("interrupted: hanging up")
                break
            if message.get("id") != self.call_id:
                if kind == "incoming":
                    await self.send({"type": "reject", "id": message.get("id"), "code": 486})
                continue
            if kind == "hangup":
                self.heard_upto = self.recorder.count
                self.call_id = None
                code = message.get("code")
                say(f"the far end hung up: {message.get('reason')} ({code})")
                return code == 200
            if kind == "error" and message.get("code") in ("no-such-call", "no-session", "bad-sdp"):
                self.call_id = None
                say(f"the call is gone: {message.get('code')}: {message.get('message')}")
                return False
        self.heard_upto = self.recorder.count
        await self.hang_up()
        return True

    async def hang_up(self) -> None:
        if self.call_id is None or self.ws is None or self.ws.closed:
            return
        call_id, self.call_id = self.call_id, None
        await self.send({"type": "hangup", "id": call_id})
        deadline = asyncio.get_running_loop().time() + HANGUP_WAIT
        with contextlib.suppress(Failure):  # a socket closing now is fine
            while (message := await self.next(deadline)) is not None:
                if message["type"] == "hangup" and message.get("id") == call_id:
                    return

    # --- the whole run -------------------------------------------------------------------

    async def run(self) -> int:
        args = self.args
        reader: asyncio.Task[None] | None = None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.interrupt)
        try:
            async with aiohttp.ClientSession() as http:
                try:
                    async with asyncio.timeout(args.timeout if args.timeout > 0 else None):
                        self.ws = await http.ws_connect(args.url, heartbeat=20, ssl=tls(args))
                except aiohttp.WSServerHandshakeError as exc:
                    raise Failure(
                        f"{args.url} is not a sipgw WebSocket (HTTP {exc.status} {exc.message})"
                    ) from None
                except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
                    raise Failure(
                        f"cannot connect to {args.url}: {exc or type(exc).__name__}"
                    ) from None
                reader = asyncio.create_task(self.read())
                await self.sign_in()
                try:
                    if args.answer:
                        await self.answer()
                    else:
                        await self.dial(args.dial)
                    say("connected")
                    ended_well = await self.talk()
                except Failure:
                    await self.hang_up()
                    raise
                finally:
                    await self.recorder.stop()
                    if self.pc is not None:
                        await self.pc.close()
                    await self.ws.close()
        except Failure as exc:
            say(f"error: {exc}")
            return EXIT_FAILED
        finally:
            if reader is not None:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        if args.record:
            say(f"recorded {self.recorder.count / RECORD_RATE:.1f} s to {args.record}")
        if not ended_well:
            return EXIT_FAILED
        return self.check_tone()

    def check_tone(self) -> int:
        result = analyse(self.recorder.samples(self.heard_upto), RECORD_RATE)
        if result is None:
            say("heard: silence")
        else:
            say(f"heard: {result[0]:.1f} Hz at {result[1]:.1f} dBFS")
        expected: float | None = self.args.expect_tone
        if expected is None:
            return EXIT_OK
        if result is None or abs(result[0] - expected) > self.args.tolerance:
            say(f"expected {expected:g} Hz (+/- {self.args.tolerance:g}): FAILED")
            return EXIT_WRONG_TONE
        say(f"expected {expected:g} Hz (+/- {self.args.tolerance:g}): ok")
        return EXIT_OK


# --- command line ------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sipgw_client.py",
        description="Call a number or answer a call through sipgw, with WebRTC audio.",
        epilog="Exit status: 0 ok, 1 call failed, 2 usage, 3 --expect-tone not heard.",
    )
    parser.add_argument("--url", required=True, help="the gateway's WebSocket, ws(s)://host/ws")
    parser.add_argument("--user", help="user name for hello (none: anonymous/demo)")
    parser.add_argument("--password", help="the user's password or token")
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--dial", metavar="NUMBER", help="call this number or extension")
    what.add_argument("--answer", action="store_true", help="wait for a call and answer it")
    audio = parser.add_mutually_exclusive_group()
    audio.add_argument("--play", type=Path, metavar="WAV", help="microphone: a 16-bit WAV file")
    audio.add_argument("--tone", type=float, metavar="HZ", help="microphone: a sine tone")
    parser.add_argument("--once", action="store_true", help="play the WAV once, then silence")
    parser.add_argument("--record", type=Path, metavar="WAV", help="write what is heard here")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds to stay connected (default 10)"
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=30.0,
        help="seconds to connect, sign in and get the call connected (default 30; 0: no limit)",
    )
    parser.add_argument("--dtmf", metavar="DIGITS", help="send these digits once connected")
    parser.add_argument(
        "--dtmf-delay", type=float, default=1.0, help="seconds after connecting (default 1)"
    )
    parser.add_argument(
        "--expect-tone", type=float, metavar="HZ", help="exit 3 unless this tone is heard"
    )
    parser.add_argument(
        "--tolerance", type=float, default=15.0, help="for --expect-tone, in Hz (default 15)"
    )
    parser.add_argument(
        "--ice-address",
        action="append",
        metavar="ADDR",
        help="offer ICE host candidates on this address only (repeatable); 127.0.0.1 for a "
        "gateway on this machine, needed in a loopback-only network namespace",
    )
    parser.add_argument(
        "--cafile", type=Path, help="for wss://: trust this CA (PEM) instead of the system's"
    )
    parser.add_argument("--show-sdp", action="store_true", help="print SDP bodies in full")
    return parser


def check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if not re.fullmatch(r"wss?://[^/\s]+(/\S*)?", args.url):
        parser.error(f"--url must look like ws://host:port/ws or wss://host/ws, not {args.url!r}")
    if args.dtmf is not None and not DTMF_DIGITS.fullmatch(args.dtmf):
        parser.error("--dtmf takes 1-64 of 0-9 * # A-D")
    if args.duration < 0 or args.timeout < 0 or args.dtmf_delay < 0:
        parser.error("--duration, --timeout and --dtmf-delay cannot be negative")
    if args.cafile is not None and not args.cafile.is_file():
        parser.error(f"--cafile {args.cafile}: no such file")
    if args.once and args.play is None:
        parser.error("--once goes with --play")
    if args.tone is not None and not 0 < args.tone < 24000:
        parser.error("--tone must be between 0 and 24000 Hz")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    check_args(parser, args)
    source: Source
    if args.play is not None:
        try:
            source = WavSource(args.play, loop=not args.once)
        except ValueError as exc:
            say(f"error: --play: {exc}")
            return EXIT_USAGE
    else:
        source = ToneSource(args.tone if args.tone is not None else 1000.0)
    if args.ice_address:
        use_ice_addresses(args.ice_address)
    return asyncio.run(Client(args, source).run())


if __name__ == "__main__":
    sys.exit(main())
