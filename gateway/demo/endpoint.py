"""The embedded demo endpoint: a real SIP UAS on loopback, used when no trunk is configured.

Extension 600 echoes the caller's RTP back; 601 plays a steady tone. It is reached over
real SIP and RTP on 127.0.0.1, through the same stack as any trunk, so a first call from
the page exercises the whole gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from sipmessage import Request

import sdp
from gateway.media.codecs import FRAME_MS, ToneGenerator, create_encoder, rtp_clock_rate_of
from gateway.media.ports import PortAllocator
from gateway.media.rtp import RtpHeader
from gateway.media.sip_leg import SipMediaLeg
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction, Timers, TransactionTimeout
from gateway.sip.ua import IncomingInvite, UserAgent

log = logging.getLogger(__name__)

MAX_CALL_SECONDS = 3600.0


class DemoCall:
    """One answered demo call; ends on BYE, on the time limit, or when the endpoint closes."""

    def __init__(self, endpoint: DemoEndpoint, media: SipMediaLeg, codec: sdp.Codec) -> None:
        self.endpoint = endpoint
        self.media = media
        self.codec = codec
        self.dialog: Dialog | None = None
        self._tone_task: asyncio.Task[None] | None = None
        self.done = asyncio.Event()

    def start_echo(self) -> None:
        codec_pt = self.codec.payload_type

        def echo(header: RtpHeader) -> None:
            if header.payload_type == codec_pt:
                self.media.send(header.payload, codec_pt, header.timestamp, header.marker)

        self.media.on_packet = echo

    def start_tone(self, frequency: float) -> None:
        self._tone_task = asyncio.create_task(self._play_tone(frequency))

    async def _play_tone(self, frequency: float) -> None:
        encoder = create_encoder(self.codec.name)
        tone = ToneGenerator(frequency, encoder.sample_rate)
        step = rtp_clock_rate_of(self.codec.name) * FRAME_MS // 1000
        loop = asyncio.get_running_loop()
        start = loop.time()
        timestamp = 0
        frame = 0
        while True:
            self.media.send(encoder.encode(tone.next_frame()), self.codec.payload_type, timestamp)
            timestamp += step
            frame += 1
            # Pace against the clock, not by accumulating sleeps, so drift cannot build up.
            await asyncio.sleep(max(0.0, start + frame * FRAME_MS / 1000 - loop.time()))

    def on_bye(self, dialog: Dialog) -> None:
        self.stop()

    def on_in_dialog_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        tx.respond_code(200 if request.method in ("INFO", "OPTIONS") else 501)

    def on_ack(self, dialog: Dialog, ack: Request) -> None:
        pass  # the demo never sends a late offer

    def stop(self) -> None:
        if self._tone_task is not None:
            self._tone_task.cancel()
        self.media.close()
        self.done.set()


class DemoEndpoint:
    def __init__(
        self,
        host: str,
        ports: PortAllocator,
        *,
        echo_extension: str = "600",
        tone_extension: str = "601",
        tone_frequency: float = 440.0,
        timers: Timers | None = None,
    ) -> None:
        self.host = host
        self.ports = ports
        self.echo_extension = echo_extension
        self.tone_extension = tone_extension
        self.tone_frequency = tone_frequency
        self.ua = UserAgent(host, 0, timers=timers, user_agent="sipgw-demo")
        self.ua.on_invite = self._on_invite
        self._calls: set[DemoCall] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self.ua.port

    async def start(self) -> None:
        await self.ua.start()
        log.info(
            "demo endpoint on sip:%s:%d (%s echo, %s tone)",
            self.host,
            self.port,
            self.echo_extension,
            self.tone_extension,
        )

    async def close(self) -> None:
        for call in list(self._calls):
            if call.dialog is not None:
                with contextlib.suppress(TransactionTimeout):
                    await asyncio.wait_for(self.ua.bye(call.dialog), 2)
            call.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.ua.close()

    def _on_invite(self, incoming: IncomingInvite) -> None:
        task = asyncio.create_task(self._answer(incoming))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, incoming: IncomingInvite) -> None:
        user = incoming.request.uri.user or ""
        if user not in (self.echo_extension, self.tone_extension):
            incoming.reject(404)
            return
        if incoming.sdp is None:
            incoming.reject(488, "Not Acceptable Here (no SDP offer)")
            return
        try:
            remote = sdp.parse_remote(incoming.sdp.decode("utf-8", errors="replace"))
        except sdp.SdpError as exc:
            incoming.reject(488, f"Not Acceptable Here ({exc})"[:120])
            return
        media = SipMediaLeg(self.host, self.ports, log_prefix="[demo] ")
        try:
            await media.open()
        except OSError:
            incoming.reject(503)
            return
        codec = remote.codec
        call = DemoCall(self, media, codec)
        media.set_remote(remote.address, remote.port)
        answer = sdp.build_answer(
            remote,
            address=self.host,
            port=media.port,
            codec=codec,
            telephone_event=remote.telephone_event_for(codec),
        )
        incoming.ring(180)
        self._calls.add(call)
        try:
            call.dialog = await incoming.accept(answer.encode(), call)
        except TransactionTimeout:
            log.info("[demo] no ACK for the 200 OK; call dropped")
            call.stop()
            self._calls.discard(call)
            return
        except asyncio.CancelledError:
            call.stop()
            self._calls.discard(call)
            raise
        if user == self.echo_extension:
            call.start_echo()
        else:
            call.start_tone(self.tone_frequency)
        try:
            await asyncio.wait_for(call.done.wait(), MAX_CALL_SECONDS)
        except TimeoutError:
            if call.dialog is not None:
                await self.ua.bye(call.dialog)
            call.stop()
        finally:
            self._calls.discard(call)
