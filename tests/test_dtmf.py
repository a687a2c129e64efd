"""DTMF: RFC 4733 telephone-event packets both ways, sipp's captured DTMF, SIP INFO bodies."""

from __future__ import annotations

import itertools
import random
import struct
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

from gateway.media import rtp
from gateway.media.dtmf import (
    DIGITS,
    DtmfError,
    DtmfReceiver,
    DtmfSender,
    EventPacket,
    digit_of,
    event_code,
    info_body,
    parse_info_body,
)

SIPP_DIR = Path("/usr/share/sip-tester")
SIPP_PCAPS = {
    **{str(n): f"dtmf_2833_{n}.pcap" for n in range(10)},
    "*": "dtmf_2833_star.pcap",
    "#": "dtmf_2833_pound.pcap",
}
TELEPHONE_EVENT_PT = 101  # what sipp's captures use


class Report(NamedTuple):
    """The fields of a telephone-event payload, RFC 4733 section 2.3."""

    event: int
    end: bool
    reserved: bool
    volume: int
    duration: int


def decode(payload: bytes) -> Report:
    assert len(payload) == 4
    event, flags, duration = struct.unpack("!BBH", payload)
    return Report(event, bool(flags & 0x80), bool(flags & 0x40), flags & 0x3F, duration)


class Sent(NamedTuple):
    """A planned packet placed on the RTP clock: what a media leg would put on the wire."""

    timestamp: int
    marker: bool
    payload: bytes


def on_clock(
    plan: Iterable[tuple[float, str, EventPacket]], clock_rate: int, base: int
) -> list[Sent]:
    """Packets of a schedule with the RTP timestamp of their event's start (mod 2**32)."""
    sent = []
    for at, _digit, packet in plan:
        start = round((at - packet.send_at) * clock_rate)
        timestamp = (base + start + packet.timestamp_offset) & 0xFFFFFFFF
        sent.append(Sent(timestamp, packet.marker, packet.payload))
    return sent


def feed(receiver: DtmfReceiver, packets: Iterable[Sent]) -> list[str]:
    out = []
    for packet in packets:
        digit = receiver.receive(packet.timestamp, packet.marker, packet.payload)
        if digit is not None:
            out.append(digit)
    return out


# --- digits and event codes ------------------------------------------------------------


def test_event_codes_follow_rfc4733_table() -> None:
    assert [event_code(d) for d in DIGITS] == list(range(16))
    assert event_code("*") == 10 and event_code("#") == 11 and event_code("a") == 12
    assert [digit_of(n) for n in range(16)] == list(DIGITS)
    assert digit_of(16) is None  # flash
    assert digit_of(255) is None and digit_of(-1) is None


@pytest.mark.parametrize("bad", ["", "55", "E", "x", " ", ",", "\u0661"])
def test_non_digits_raise_dtmf_error(bad: str) -> None:
    with pytest.raises(DtmfError):
        event_code(bad)
    assert issubclass(DtmfError, ValueError)


# --- sending ---------------------------------------------------------------------------


def test_payload_layout_matches_rfc4733_section_2_3() -> None:
    # Event 5 at -10 dBm0 lasting 800 units (100 ms at 8 kHz): 05 0a 03 20, E set on the end.
    packets = DtmfSender(8000, duration_ms=120, volume=10).packets("5")
    update = next(p for p in packets if decode(p.payload).duration == 800)
    assert update.payload == bytes([0x05, 0x0A, 0x03, 0x20])
    assert decode(update.payload) == Report(5, False, False, 10, 800)
    end = DtmfSender(8000, duration_ms=100, volume=10).packets("5")[-1]
    assert end.payload == bytes([0x05, 0x8A, 0x03, 0x20])
    assert end.payload[1] & 0x80


def test_a_whole_digit_at_8khz() -> None:
    packets = DtmfSender(8000, duration_ms=100, packet_ms=20).packets("#")
    reports = [decode(p.payload) for p in packets]
    assert [p.marker for p in packets] == [True] + [False] * 6
    assert {r.event for r in reports} == {11}
    assert {r.volume for r in reports} == {10}
    assert not any(r.reserved for r in reports)
    # Updates every 20 ms, the duration growing by 160 units, then the final one three times.
    assert [r.duration for r in reports] == [160, 320, 480, 640, 800, 800, 800]
    assert [r.end for r in reports] == [False] * 4 + [True] * 3
    assert [p.send_at for p in packets] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1, 0.12, 0.14])
    # One event, one RTP timestamp.
    assert {p.timestamp_offset for p in packets} == {0}


def test_a_whole_digit_at_48khz() -> None:
    packets = DtmfSender(48000, duration_ms=100).packets("9")
    durations = [decode(p.payload).duration for p in packets]
    assert durations == [960, 1920, 2880, 3840, 4800, 4800, 4800]
    assert [decode(p.payload).end for p in packets].count(True) == 3
    assert {p.timestamp_offset for p in packets} == {0}


def test_duration_not_a_multiple_of_the_packet_interval() -> None:
    packets = DtmfSender(8000, duration_ms=110).packets("1")
    assert [decode(p.payload).duration for p in packets] == [160, 320, 480, 640, 800] + [880] * 3
    assert packets[-3].send_at == pytest.approx(0.11)
    short = DtmfSender(8000, duration_ms=10).packets("1")  # shorter than one interval
    assert [(p.marker, decode(p.payload).end, decode(p.payload).duration) for p in short] == [
        (True, True, 80),
        (False, True, 80),
        (False, True, 80),
    ]


def test_long_event_is_sent_in_segments() -> None:
    # RFC 4733 section 2.5.1.3: 3 s at 48 kHz is 144000 units, more than 0xFFFF. Each segment
    # ends with a 0xFFFF report without E (sent three times, section 2.5.1.4); the next starts
    # at the previous segment's timestamp plus 0xFFFF, without the marker bit.
    packets = DtmfSender(48000, duration_ms=3000).packets("5")
    reports = [decode(p.payload) for p in packets]
    assert sum(p.marker for p in packets) == 1 and packets[0].marker
    assert sorted({p.timestamp_offset for p in packets}) == [0, 0xFFFF, 2 * 0xFFFF]

    def segment(offset: int) -> list[Report]:
        return [decode(p.payload) for p in packets if p.timestamp_offset == offset]

    for offset in (0, 0xFFFF):
        assert segment(offset)[-3:] == [Report(5, False, False, 10, 0xFFFF)] * 3
    # Within a segment the duration only grows; the last segment ends with E three times.
    for offset in (0, 0xFFFF, 2 * 0xFFFF):
        durations = [r.duration for r in segment(offset)]
        assert durations == sorted(durations)
    assert reports[-3:] == [Report(5, True, False, 10, 144000 - 2 * 0xFFFF)] * 3
    assert sum(r.end for r in reports) == 3
    # The first update past 0xFFFF units (1380 ms = 66240 units) ends the first segment.
    at_1380 = [
        (p.timestamp_offset, decode(p.payload).duration) for p in packets if p.send_at == 1.38
    ]
    assert at_1380 == [(0, 0xFFFF), (0xFFFF, 66240 - 0xFFFF)]
    assert [p.send_at for p in packets] == sorted(p.send_at for p in packets)


def test_schedule_spaces_digits_with_the_gap() -> None:
    sender = DtmfSender(8000, duration_ms=100, gap_ms=60)
    plan = sender.schedule("123#")
    assert [digit for _, digit, _ in plan] == ["1"] * 7 + ["2"] * 7 + ["3"] * 7 + ["#"] * 7
    times = [at for at, _, _ in plan]
    assert times == sorted(times)
    starts = sorted({round(at - p.send_at, 6) for at, _, p in plan})
    assert starts == [0.0, 0.16, 0.32, 0.48]
    assert [decode(p.payload).event for _, _, p in plan if p.marker] == [1, 2, 3, 11]
    # A gap shorter than the end repeats: the next event waits for the last repeat.
    tight = DtmfSender(8000, duration_ms=100, gap_ms=0).schedule("12")
    first_end = max(at for at, d, _ in tight if d == "1")
    assert min(at - p.send_at for at, d, p in tight if d == "2") >= first_end
    assert sender.schedule("") == []
    assert sender.schedule("ab")[0][1] == "A"


def test_schedule_rejects_the_whole_string() -> None:
    with pytest.raises(DtmfError, match="'x'"):
        DtmfSender().schedule("12x4")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"clock_rate": 0},
        {"duration_ms": 0},
        {"packet_ms": 0},
        {"gap_ms": -1},
        {"volume": 64},
        {"volume": -1},
        {"clock_rate": 8000, "packet_ms": 10_000},  # an update interval over 0xFFFF units
    ],
)
def test_sender_rejects_bad_settings(kwargs: dict[str, int]) -> None:
    with pytest.raises(DtmfError):
        DtmfSender(**kwargs)


# --- receiving -------------------------------------------------------------------------


def stream(
    digits: str, clock_rate: int = 8000, base: int = 0xFFFFF800, **kwargs: int
) -> list[Sent]:
    # The base puts the RTP timestamp across its 32-bit wrap during the digits.
    return on_clock(DtmfSender(clock_rate, **kwargs).schedule(digits), clock_rate, base)


def test_each_digit_once_from_a_realistic_stream() -> None:
    packets = stream("123#")
    assert len({p.timestamp for p in packets}) == 4
    assert packets[0].timestamp > packets[-1].timestamp  # the RTP clock wrapped meanwhile
    assert feed(DtmfReceiver(), packets) == ["1", "2", "3", "#"]


def test_each_digit_once_at_48khz() -> None:
    assert feed(DtmfReceiver(48000), stream("*0D", clock_rate=48000)) == ["*", "0", "D"]


def test_repeated_digit_is_two_events() -> None:
    assert feed(DtmfReceiver(), stream("5555")) == ["5", "5", "5", "5"]


def test_loss_of_the_first_packet() -> None:
    packets = stream("123#")
    lost = [p for p in packets if not p.marker]
    assert feed(DtmfReceiver(), lost) == ["1", "2", "3", "#"]
    # Only the end packets get through: the digits still arrive, once.
    ends_only = [p for p in packets if decode(p.payload).end]
    assert feed(DtmfReceiver(), ends_only) == ["1", "2", "3", "#"]
    # The lost start packet turns up late, after its event ended: not a second press.
    receiver = DtmfReceiver()
    assert feed(receiver, packets[1:7]) == ["1"]
    assert feed(receiver, [packets[0]]) == []


def test_reordering_within_a_window() -> None:
    packets = stream("123#" * 3)
    for seed in range(20):
        shuffled = list(packets)
        rng = random.Random(seed)
        for i in range(len(shuffled) - 1):  # swap neighbours: a jittery network path
            if rng.random() < 0.3:
                shuffled[i], shuffled[i + 1] = shuffled[i + 1], shuffled[i]
        assert feed(DtmfReceiver(), shuffled) == list("123#" * 3)


def test_heavy_reordering_reports_every_event_once() -> None:
    packets = stream("1234567890")
    rng = random.Random(7)
    shuffled = rng.sample(packets, len(packets))
    assert Counter(feed(DtmfReceiver(), shuffled)) == Counter("1234567890")


def test_duplicates() -> None:
    packets = stream("123#")
    doubled = [p for p in packets for _ in range(2)]
    assert feed(DtmfReceiver(), doubled) == ["1", "2", "3", "#"]
    # An old packet replayed after later events is not news either.
    receiver = DtmfReceiver()
    assert feed(receiver, packets) == ["1", "2", "3", "#"]
    assert feed(receiver, packets[:3] + packets[9:12]) == []


def test_same_timestamp_after_end_is_new_only_with_marker() -> None:
    # RFC 4733 section 2.5.2.2.
    one = [p for p in stream("1", base=1000)]
    receiver = DtmfReceiver()
    assert feed(receiver, one) == ["1"]
    assert feed(receiver, [p for p in one if not p.marker]) == []  # no marker: the same event
    assert feed(receiver, one) == ["1"]  # marker after an end: a new event
    receiver = DtmfReceiver()
    assert feed(receiver, [one[0], one[1]]) == ["1"]
    assert feed(receiver, [one[0]]) == []  # a duplicated start packet before any end


def test_long_event_in_segments_is_one_digit() -> None:
    for clock_rate in (8000, 48000):
        sender = DtmfSender(clock_rate, duration_ms=20_000)
        packets = on_clock(sender.schedule("7"), clock_rate, 0xFFFF0000)
        assert len({p.timestamp for p in packets}) == 20_000 * clock_rate // 1000 // 0xFFFF + 1
        assert feed(DtmfReceiver(clock_rate), packets) == ["7"]
        # With the segment ends lost and a new press of the same digit after it.
        no_ends = [p for p in packets if decode(p.payload).duration != 0xFFFF]
        again = on_clock(sender.schedule("7"), clock_rate, 0x12345678)
        assert feed(DtmfReceiver(clock_rate), no_ends + again) == ["7", "7"]


def test_new_segment_of_another_code_or_with_marker_is_a_new_event() -> None:
    receiver = DtmfReceiver()
    start = 5000
    assert receiver.receive(start, True, bytes.fromhex("050a00a0")) == "5"
    assert receiver.receive(start + 0xFFFF, False, bytes.fromhex("060a00a0")) == "6"
    assert receiver.receive(start + 0xFFFF + 0xFFFF, True, bytes.fromhex("060a00a0")) == "6"


def test_duration_that_wraps_on_one_timestamp_is_one_digit() -> None:
    # A sender that ignores section 2.5.1.3 and lets the 16-bit duration wrap around, keeping
    # the timestamp: still one event.
    receiver = DtmfReceiver()
    durations = [(160 * n) & 0xFFFF for n in range(1, 1000)]
    reports = [struct.pack("!BBH", 3, 10, d) for d in durations]
    assert any(b < a for a, b in itertools.pairwise(durations))
    got = [receiver.receive(42, n == 0, r) for n, r in enumerate(reports)]
    assert [d for d in got if d] == ["3"]


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x05", b"\x05\x0a", b"\x05\x0a\x00", b"\x10\x0a\x00\xa0", b"\xff\x8a\xff\xff"],
)
def test_garbage_is_ignored(payload: bytes) -> None:
    receiver = DtmfReceiver()
    assert receiver.receive(1234, True, payload) is None
    # ... and does not hide a real event on that timestamp.
    assert receiver.receive(1234, True, bytes.fromhex("080a00a0")) == "8"


def test_trailing_bytes_after_the_first_report_are_ignored() -> None:
    assert DtmfReceiver().receive(1, True, bytes.fromhex("020a00a0") + b"\x00" * 9) == "2"


def test_through_real_rtp_packets() -> None:
    """The sender's plan as wire packets (gateway.media.rtp), parsed again for the receiver."""
    plan = DtmfSender(8000).schedule("159#")
    wire = [
        rtp.build(TELEPHONE_EVENT_PT, seq, sent.timestamp, 0x1234, sent.payload, sent.marker)
        for seq, sent in enumerate(on_clock(plan, 8000, 0x7FFFFFF0))
    ]
    receiver = DtmfReceiver()
    got = []
    for data in wire:
        header = rtp.parse(data)
        digit = receiver.receive(header.timestamp, header.marker, header.payload)
        got += [digit] if digit else []
    assert got == list("159#")


# --- sipp's captured RFC 2833 DTMF -----------------------------------------------------


def pcap_udp_payloads(path: Path) -> Iterator[bytes]:
    """UDP payloads of an Ethernet/IPv4 libpcap file (the format sipp ships)."""
    data = path.read_bytes()
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        raise ValueError(f"{path}: not a libpcap file")
    (linktype,) = struct.unpack_from(endian + "I", data, 20)
    if linktype != 1:
        raise ValueError(f"{path}: link type {linktype}, only Ethernet is read")
    offset = 24
    while offset + 16 <= len(data):
        _sec, _frac, captured, _length = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + captured]
        offset += 16 + captured
        ethertype_at = 12
        (ethertype,) = struct.unpack_from("!H", frame, ethertype_at)
        if ethertype == 0x8100:  # one 802.1Q tag
            ethertype_at += 4
            (ethertype,) = struct.unpack_from("!H", frame, ethertype_at)
        ip = frame[ethertype_at + 2 :]
        if ethertype != 0x0800 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        udp = ip[(ip[0] & 0x0F) * 4 :]
        (udp_length,) = struct.unpack_from("!H", udp, 4)
        yield udp[8:udp_length]


def sipp_events(name: str) -> list[rtp.RtpHeader]:
    path = SIPP_DIR / name
    if not path.exists():
        pytest.skip(f"{path} missing (Debian package sip-tester)")
    headers = [rtp.parse(p) for p in pcap_udp_payloads(path)]
    return [h for h in headers if h.payload_type == TELEPHONE_EVENT_PT]


def feed_headers(receiver: DtmfReceiver, headers: Iterable[rtp.RtpHeader]) -> list[str]:
    return feed(receiver, (Sent(h.timestamp, h.marker, h.payload) for h in headers))


@pytest.mark.parametrize(("digit", "name"), sorted(SIPP_PCAPS.items()))
def test_sipp_capture(digit: str, name: str) -> None:
    headers = sipp_events(name)
    assert len(headers) == 10
    reports = [decode(h.payload[:4]) for h in headers]
    assert {r.event for r in reports} == {event_code(digit)}
    assert [r.end for r in reports].count(True) == 3  # sipp repeats its end packet too
    assert feed_headers(DtmfReceiver(), headers) == [digit]


def test_sipp_captures_in_one_stream() -> None:
    digits = "1234567890*#"
    headers = [h for d in digits for h in sipp_events(SIPP_PCAPS[d])]
    assert feed_headers(DtmfReceiver(), headers) == list(digits)
    # The same capture played twice is two presses: its marker comes after its end packets.
    twice = sipp_events(SIPP_PCAPS["1"]) * 2
    assert feed_headers(DtmfReceiver(), twice) == ["1", "1"]
    # Without its start packet and with its updates reversed, still one digit.
    mangled = sipp_events(SIPP_PCAPS["#"])[1:]
    assert feed_headers(DtmfReceiver(), mangled[:6][::-1] + mangled[6:]) == ["#"]


# --- SIP INFO --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "body", "digit"),
    [
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n", "5"),
        ("application/dtmf-relay", b"Signal=5\r\nDuration=160", "5"),
        ("application/dtmf-relay", b"Signal=#\nDuration=250\n", "#"),
        ("application/dtmf-relay", b"Signal= #\r\nDuration= 160\r\n", "#"),
        ("application/dtmf-relay", b"signal = *\r\n", "*"),
        ("application/dtmf-relay", b"Duration=160\r\nSIGNAL=d\r\n", "D"),
        ("application/dtmf-relay", b"Signal=11\r\nDuration=160\r\n", "#"),  # event code form
        ("Application/DTMF-Relay; charset=utf-8", b"Signal=0\r\n", "0"),
        ("  application/dtmf-relay ", b"Signal=9", "9"),
        ("application/dtmf", b"5", "5"),
        ("application/dtmf", b" 7\r\n", "7"),
        ("application/dtmf", b"10", "*"),
        ("APPLICATION/DTMF", b"b", "B"),
    ],
)
def test_info_body_variants(content_type: str, body: bytes, digit: str) -> None:
    assert parse_info_body(content_type, body) == digit


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/dtmf-relay", b""),
        ("application/dtmf-relay", b"Duration=160\r\n"),
        ("application/dtmf-relay", b"Signal=\r\n"),
        ("application/dtmf-relay", b"Signal=!\r\n"),  # flash
        ("application/dtmf-relay", b"Signal=16\r\n"),  # flash as an event code
        ("application/dtmf-relay", b"Signal=E\r\n"),
        ("application/dtmf-relay", b"Signal=55\r\n"),
        ("application/dtmf-relay", b"Signal5\r\n"),
        ("application/dtmf-relay", b"\xff\xfe\x00Signal"),
        ("application/dtmf", b""),
        ("application/dtmf", b"12 3"),
        ("application/sdp", b"Signal=5\r\n"),
        ("text/plain", b"5"),
        ("", b"Signal=5"),
    ],
)
def test_info_bodies_that_are_not_a_digit(content_type: str, body: bytes) -> None:
    assert parse_info_body(content_type, body) is None


def test_info_body_round_trip() -> None:
    assert info_body("5") == ("application/dtmf-relay", b"Signal=5\r\nDuration=160\r\n")
    assert info_body("a", 250) == ("application/dtmf-relay", b"Signal=A\r\nDuration=250\r\n")
    for digit in DIGITS:
        assert parse_info_body(*info_body(digit)) == digit
    with pytest.raises(DtmfError):
        info_body("x")
    with pytest.raises(DtmfError):
        info_body("1", 0)
