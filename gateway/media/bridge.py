"""The media bridge: 20 ms audio frames both ways between the browser and SIP legs.

Payloads are relayed untouched when both legs use the same codec (the common case, since
the browser is answered with the SIP side's codec); only otherwise does a Transcoder sit
in that direction. Timestamps are re-based per leg; each leg keeps its own SSRC.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

import sdp
from gateway.media.browser_leg import BrowserLeg
from gateway.media.codecs import FRAME_MS, Transcoder, rtp_clock_rate_of
from gateway.media.dtmf import DtmfReceiver, DtmfSender
from gateway.media.sip_leg import SipMediaLeg

log = logging.getLogger(__name__)


def _same_codec(a: sdp.Codec, b: sdp.Codec) -> bool:
    return a.name.lower() == b.name.lower() and a.clock_rate == b.clock_rate


@dataclass
class DirectionStats:
    packets: int = 0
    dropped: int = 0


class _Direction:
    """One direction: payloads of `src` in, payloads of `dst` with re-based timestamps out."""

    def __init__(self, src: sdp.Codec, dst: sdp.Codec) -> None:
        self.src = src
        self.dst = dst
        self.transcoder = None if _same_codec(src, dst) else Transcoder(src.name, dst.name)
        self._origin: int | None = None
        self._out_ts = 0
        self._step = rtp_clock_rate_of(dst.name) * FRAME_MS // 1000
        self.stats = DirectionStats()

    def convert(self, pt: int, ts: int, payload: bytes) -> list[tuple[bytes, int]]:
        if pt != self.src.payload_type:
            self.stats.dropped += 1  # comfort noise, telephone-event or junk
            return []
        self.stats.packets += 1
        if self.transcoder is None:
            if self._origin is None:
                self._origin = ts
            # Keep the source's spacing, so DTX gaps and losses stay visible downstream.
            return [(payload, (ts - self._origin) & 0xFFFFFFFF)]
        out = []
        for frame in self.transcoder.transcode(payload):
            out.append((frame, self._out_ts))
            self._out_ts += self._step
        return out


class Bridge:
    def __init__(
        self,
        browser: BrowserLeg,
        sip: SipMediaLeg,
        browser_codec: sdp.Codec,
        sip_codec: sdp.Codec,
        *,
        log_prefix: str = "",
    ) -> None:
        self.browser = browser
        self.sip = sip
        self.prefix = log_prefix
        self.browser_codec = browser_codec
        self.to_sip = _Direction(browser_codec, sip_codec)
        self.to_browser = _Direction(sip_codec, browser_codec)
        self.transcoding = self.to_sip.transcoder is not None
        self.telephone_event: sdp.Codec | None = None
        # Off while the call is on hold either way: the held party hears silence, not the page.
        self.send_to_sip = True
        self.on_digit: Callable[[str], None] | None = None
        self._dtmf_in: DtmfReceiver | None = None
        self._dtmf_tasks: set[asyncio.Task[None]] = set()
        log.debug(
            "%sbridge %s/%d <-> %s/%d (%s)",
            log_prefix,
            browser_codec.name,
            browser_codec.clock_rate,
            sip_codec.name,
            sip_codec.clock_rate,
            "transcoding" if self.transcoding else "relay",
        )
        browser.on_packet = self._from_browser
        sip.on_packet = lambda h: self._from_sip(h.payload_type, h.timestamp, h.marker, h.payload)

    def set_sip_codec(self, codec: sdp.Codec) -> None:
        """The far end changed codec (a 200 after a different 183, or a re-INVITE)."""
        if (
            _same_codec(codec, self.to_sip.dst)
            and codec.payload_type == self.to_sip.dst.payload_type
        ):
            return
        log.info("%sSIP codec now %s/%d", self.prefix, codec.name, codec.clock_rate)
        self.to_sip = _Direction(self.browser_codec, codec)
        self.to_browser = _Direction(codec, self.browser_codec)
        self.transcoding = self.to_sip.transcoder is not None

    def set_telephone_event(self, event: sdp.Codec | None) -> None:
        """RFC 4733 events on the SIP leg: their payload type and clock come from the SDP."""
        self.telephone_event = event
        self._dtmf_in = DtmfReceiver(event.clock_rate) if event else None

    def send_dtmf(self, digits: str) -> bool:
        """Send digits as RFC 4733 events on the SIP leg; False if none was negotiated."""
        event = self.telephone_event
        if event is None:
            return False
        task = asyncio.create_task(self._play_dtmf(event, digits))
        self._dtmf_tasks.add(task)
        task.add_done_callback(self._dtmf_tasks.discard)
        return True

    async def _play_dtmf(self, event: sdp.Codec, digits: str) -> None:
        sender = DtmfSender(event.clock_rate)
        loop = asyncio.get_running_loop()
        start = loop.time()
        timestamp = 0
        for at, _digit, packet in sender.schedule(digits):
            await asyncio.sleep(max(0.0, start + at - loop.time()))
            if packet.marker:
                # Every packet of one event carries its start time (RFC 4733 section 2.5.1.2).
                timestamp = self.sip.next_timestamp(event.clock_rate)
            self.sip.send(
                packet.payload,
                event.payload_type,
                timestamp + packet.timestamp_offset,
                packet.marker,
                audio=False,
            )

    def _from_browser(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        if not self.send_to_sip:
            return
        for frame, out_ts in self.to_sip.convert(pt, ts, payload):
            self.sip.send(frame, self.to_sip.dst.payload_type, out_ts, marker)

    def _from_sip(self, pt: int, ts: int, marker: bool, payload: bytes) -> None:
        event = self.telephone_event
        if event is not None and pt == event.payload_type:
            digit = self._dtmf_in.receive(ts, marker, payload) if self._dtmf_in else None
            if digit is not None and self.on_digit is not None:
                self.on_digit(digit)
            return
        for frame, out_ts in self.to_browser.convert(pt, ts, payload):
            self.browser.send(frame, out_ts)

    def stop(self) -> None:
        self.browser.on_packet = None
        self.sip.on_packet = None
        for task in self._dtmf_tasks:
            task.cancel()
