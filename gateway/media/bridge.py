"""The media bridge: 20 ms audio frames both ways between the browser and SIP legs.

Payloads are relayed untouched when both legs use the same codec (the common case, since
the browser is answered with the SIP side's codec); only otherwise does a Transcoder sit
in that direction. Timestamps are re-based per leg; each leg keeps its own SSRC.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import sdp
from gateway.media.browser_leg import BrowserLeg
from gateway.media.codecs import FRAME_MS, Transcoder, rtp_clock_rate_of
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
        self.to_sip = _Direction(browser_codec, sip_codec)
        self.to_browser = _Direction(sip_codec, browser_codec)
        self.transcoding = self.to_sip.transcoder is not None
        log.info(
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

    def _from_browser(self, pt: int, seq: int, ts: int, marker: bool, payload: bytes) -> None:
        for frame, out_ts in self.to_sip.convert(pt, ts, payload):
            self.sip.send(frame, self.to_sip.dst.payload_type, out_ts, marker)

    def _from_sip(self, pt: int, ts: int, marker: bool, payload: bytes) -> None:
        for frame, out_ts in self.to_browser.convert(pt, ts, payload):
            self.browser.send(frame, out_ts)

    def stop(self) -> None:
        self.browser.on_packet = None
        self.sip.on_packet = None
