"""DTMF for the media path: RFC 4733 telephone-events and SIP INFO bodies, pure and synchronous.

Nothing here does I/O or keeps time: :class:`DtmfSender` plans the packets of a digit string
(what to send and when, relative to the start), the media leg sends them; :class:`DtmfReceiver`
is fed the telephone-event packets a leg receives and says which digit each new event is.

The payload (RFC 4733 section 2.3)::

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |     event     |E|R| volume    |          duration             |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

All packets of one event carry the RTP timestamp of the event's start; the duration, in
units of the telephone-event clock, grows with each update. An event longer than the 16-bit
duration field holds (0xFFFF units: 8.2 s at 8 kHz, 1.4 s at 48 kHz) is sent in segments
(section 2.5.1.3): each segment ends with a report of duration 0xFFFF without the E bit, and
the next one starts at the RTP timestamp of the previous segment plus 0xFFFF, without the
marker bit. That is the one case where a packet's ``timestamp_offset`` is not 0.
"""

from __future__ import annotations

import re
import struct
from collections import OrderedDict
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DIGITS",
    "DtmfError",
    "DtmfReceiver",
    "DtmfSender",
    "EventPacket",
    "digit_of",
    "event_code",
    "info_body",
    "parse_info_body",
]

DIGITS: Final = "0123456789*#ABCD"  # index = RFC 4733 event code (section 3.2)

MAX_DURATION: Final = 0xFFFF
MAX_VOLUME: Final = 63  # six bits of -dBm0
END_REPEATS: Final = 3  # section 2.5.1.4: the final packet is sent three times
_END_BIT: Final = 0x80
_PAYLOAD: Final = struct.Struct("!BBH")
_TIMESTAMP_MASK: Final = 0xFFFFFFFF

_INFO_RELAY: Final = "application/dtmf-relay"
_INFO_PLAIN: Final = "application/dtmf"


class DtmfError(ValueError):
    """A digit that is not DTMF, or a sender setting out of range."""


def event_code(digit: str) -> int:
    """The RFC 4733 event code of a DTMF digit; A-D may be given in lower case."""
    if len(digit) != 1 or digit.upper() not in DIGITS:
        raise DtmfError(f"not a DTMF digit: {digit!r} (expected one of {DIGITS})")
    return DIGITS.index(digit.upper())


def digit_of(code: int) -> str | None:
    """The digit of an event code, or None for the non-DTMF events (16 is flash, and so on)."""
    return DIGITS[code] if 0 <= code < len(DIGITS) else None


def _payload(code: int, end: bool, volume: int, duration: int) -> bytes:
    return _PAYLOAD.pack(code, (_END_BIT if end else 0) | volume, duration)


@dataclass(frozen=True)
class EventPacket:
    """One RTP telephone-event packet to send."""

    payload: bytes  # 4 bytes: event, E|R|volume, duration (RFC 4733 section 2.3)
    marker: bool  # set on the first packet of an event only
    # Added to the RTP timestamp of the event's start: 0 except in the later segments of an
    # event longer than 0xFFFF units (RFC 4733 section 2.5.1.3).
    timestamp_offset: int
    send_at: float  # seconds after the event's start


class DtmfSender:
    """Plans RFC 4733 section 2.5.1 events: a start packet with the marker bit, an update every
    ``packet_ms`` reporting the duration so far, then the final duration three times with the
    E bit, one ``packet_ms`` apart (section 2.5.1.4).

    A report goes out when the tone time it claims has passed, so the first one (duration of
    one packet interval) is sent ``packet_ms`` after the start and the end packets from
    ``duration_ms`` on.
    """

    def __init__(
        self,
        clock_rate: int = 8000,
        *,
        duration_ms: int = 100,
        gap_ms: int = 60,
        volume: int = 10,
        packet_ms: int = 20,
    ) -> None:
        if clock_rate <= 0:
            raise DtmfError(f"clock rate must be positive, not {clock_rate}")
        if duration_ms <= 0 or packet_ms <= 0 or gap_ms < 0:
            raise DtmfError(
                f"bad timing: duration {duration_ms} ms, packet {packet_ms} ms, gap {gap_ms} ms"
            )
        if not 0 <= volume <= MAX_VOLUME:
            raise DtmfError(f"volume is 0-{MAX_VOLUME} (-dBm0), not {volume}")
        if not 0 < packet_ms * clock_rate // 1000 <= MAX_DURATION:
            raise DtmfError(f"{packet_ms} ms at {clock_rate} Hz is not a usable update interval")
        self.clock_rate = clock_rate
        self.duration_ms = duration_ms
        self.gap_ms = gap_ms
        self.volume = volume
        self.packet_ms = packet_ms

    def _units(self, ms: int) -> int:
        return ms * self.clock_rate // 1000

    def packets(self, digit: str) -> list[EventPacket]:
        code = event_code(digit)
        total = max(1, self._units(self.duration_ms))
        out: list[EventPacket] = []
        segment = 0  # where the current segment starts, in units from the event's start
        repeats: list[EventPacket] = []  # a finished segment's final report, to send again

        def emit(payload: bytes, offset: int, at_ms: int) -> None:
            out.append(EventPacket(payload, not out, offset, at_ms / 1000))

        tick = 1
        while True:
            at_ms = min(tick * self.packet_ms, self.duration_ms)
            elapsed = total if at_ms == self.duration_ms else self._units(at_ms)
            if repeats:
                emit(repeats.pop().payload, segment - MAX_DURATION, at_ms)
            while elapsed - segment > MAX_DURATION:
                # Section 2.5.1.3: the segment ends at the longest duration the field holds,
                # without the E bit; the next starts where it ended. Like the final packet of
                # an event, a segment's last report is sent three times (section 2.5.1.4),
                # one update interval apart.
                emit(_payload(code, False, self.volume, MAX_DURATION), segment, at_ms)
                repeats = [out[-1]] * (END_REPEATS - 1)
                segment += MAX_DURATION
            if at_ms < self.duration_ms:
                emit(_payload(code, False, self.volume, elapsed - segment), segment, at_ms)
                tick += 1
                continue
            for repeat in repeats:
                emit(repeat.payload, repeat.timestamp_offset, at_ms)
            end = _payload(code, True, self.volume, elapsed - segment)
            for n in range(END_REPEATS):
                emit(end, segment, at_ms + n * self.packet_ms)
            return out

    def schedule(self, digits: str) -> list[tuple[float, str, EventPacket]]:
        """Every packet of a digit string as (seconds from now, digit, packet), in sending
        order. Each event starts ``gap_ms`` after the previous one's tone ends (later if its
        end packets are still being repeated), so its start is ``time - packet.send_at``:
        that instant of the media clock gives the RTP timestamp of its packets."""
        for digit in digits:
            event_code(digit)  # reject the whole string before planning any of it
        planned: list[tuple[float, str, EventPacket]] = []
        start_ms = 0
        for digit in digits:
            packets = self.packets(digit)
            planned.extend(((start_ms / 1000 + p.send_at), digit.upper(), p) for p in packets)
            last_ms = round(packets[-1].send_at * 1000)
            start_ms += max(self.duration_ms + self.gap_ms, last_ms)
        return planned


@dataclass
class _Event:
    code: int
    ended: bool  # an end packet came
    marker_seen: bool  # its start came (a later segment of a long event has no marker)


class DtmfReceiver:
    """Turns received telephone-event packets into digits, each event reported once.

    An event is known by its RTP timestamp (RFC 4733 section 2.5.2), so it survives the loss
    of its first packet (the digit is reported on the first packet that does arrive, an end
    packet included), reordering, duplicates and the repeated end packets. The same timestamp
    starts a new event only after an end packet and with the marker bit (section 2.5.2.2); a
    new timestamp 0xFFFF after a not yet ended event of the same code, without the marker
    bit, is the next segment of a long event (section 2.5.1.3), not a new press.
    """

    HISTORY = 32  # events remembered, so late packets of recent ones are not news

    def __init__(self, clock_rate: int = 8000) -> None:
        if clock_rate <= 0:
            raise DtmfError(f"clock rate must be positive, not {clock_rate}")
        self.clock_rate = clock_rate  # the unit of the durations and timestamps fed in
        self._events: OrderedDict[int, _Event] = OrderedDict()

    def receive(self, timestamp: int, marker: bool, payload: bytes) -> str | None:
        if len(payload) < _PAYLOAD.size:
            return None
        code, flags, _duration = _PAYLOAD.unpack_from(payload)
        digit = digit_of(code)
        if digit is None:
            return None
        end = bool(flags & _END_BIT)
        timestamp &= _TIMESTAMP_MASK
        known = self._events.get(timestamp)
        if known is not None and not (marker and self._reused(timestamp, known)):
            known.ended |= end
            known.marker_seen |= marker
            return None
        previous = self._events.get((timestamp - MAX_DURATION) & _TIMESTAMP_MASK)
        continues = (
            previous is not None and previous.code == code and not previous.ended and not marker
        )
        self._remember(timestamp, _Event(code, end, marker or continues))
        return None if continues else digit

    def _reused(self, timestamp: int, known: _Event) -> bool:
        """Whether a marker packet on a known timestamp starts a new event there (section
        2.5.2.2). Only the latest event's timestamp can be reused, and only once it has
        ended; if its own start packet never came, this marker packet is that one, late.
        Anything else is a late or duplicated packet of an event already reported."""
        latest = next(reversed(self._events))
        return timestamp == latest and known.ended and known.marker_seen

    def _remember(self, timestamp: int, event: _Event) -> None:
        self._events[timestamp] = event
        self._events.move_to_end(timestamp)
        while len(self._events) > self.HISTORY:
            self._events.popitem(last=False)


def parse_info_body(content_type: str, body: bytes) -> str | None:
    """The digit of a SIP INFO DTMF body, or None for anything else.

    ``application/dtmf-relay`` carries ``Signal=5`` and ``Duration=160`` lines;
    ``application/dtmf`` carries the digit alone. Either may give the event code (``10`` for
    ``*``) instead, as some PBXs send; flash (``!`` or 16) is not a digit.
    """
    kind = content_type.split(";", 1)[0].strip().lower()
    text = body.decode("utf-8", errors="replace")
    if kind == _INFO_PLAIN:
        return _signal_digit(text)
    if kind != _INFO_RELAY:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip().lower() == "signal":
            return _signal_digit(value)
    return None


_CODE: Final = re.compile(r"[0-9]{1,2}")


def _signal_digit(value: str) -> str | None:
    value = value.strip()
    if len(value) == 1 and value.upper() in DIGITS:
        return value.upper()
    if _CODE.fullmatch(value):
        return digit_of(int(value))
    return None


def info_body(digit: str, duration_ms: int = 160) -> tuple[str, bytes]:
    """A SIP INFO ``application/dtmf-relay`` body for one digit: (content type, body)."""
    code = event_code(digit)
    if duration_ms <= 0:
        raise DtmfError(f"duration must be positive, not {duration_ms} ms")
    return _INFO_RELAY, f"Signal={DIGITS[code]}\r\nDuration={duration_ms}\r\n".encode("ascii")
