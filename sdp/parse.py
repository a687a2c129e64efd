"""Checked parsing: line-level validation first, then sdp_transform for the structure.

sdp_transform accepts almost anything (junk lines are silently skipped, a port "abc"
becomes a missing key), so the checks it does not make are made here, with the line
number and text of the first offending line in the error.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, cast

import sdp_transform

from .errors import SdpError, SdpNegotiationError, SdpParseError
from .model import (
    CANONICAL_RATES,
    DIRECTIONS,
    STATIC_PAYLOADS,
    TELEPHONE_EVENT,
    Codec,
    Direction,
)

Session = dict[str, Any]
Media = dict[str, Any]

_LINE = re.compile(r"^[a-z]=")
_ORIGIN = re.compile(r"^o=\S+ \S+ \S+ IN IP[46] \S+$")
_MEDIA = re.compile(r"^m=(\S+) (\S+) (\S+)(?: (.*))?$")
_PORT = re.compile(r"^(\d{1,5})(?:/(\d+))?$")
_CONNECTION = re.compile(r"^c=IN IP[46] \S+$")
_RTPMAP = re.compile(r"^a=rtpmap:(\d{1,3}) [^/\s]+/\d+(?:/\d+)?$")
_SHOW = 80


def _show(line: str) -> str:
    return repr(line if len(line) <= _SHOW else line[:_SHOW] + "...")


@contextmanager
def guarded(what: str) -> Iterator[None]:
    """Turn any stray exception from parsing library code into an SdpParseError."""
    try:
        yield
    except SdpError:
        raise
    except (KeyError, ValueError, IndexError, TypeError, AttributeError, re.error) as exc:
        raise SdpParseError(f"{what}: malformed SDP ({type(exc).__name__}: {exc})") from exc


def split_lines(text: object) -> list[str]:
    if not isinstance(text, str):
        raise SdpParseError(f"SDP must be text, got {type(text).__name__}")
    # CRLF, bare LF and trailing whitespace are all seen in the wild; blank lines carry nothing.
    return [line.rstrip() for line in text.splitlines() if line.strip()]


def _check_lines(lines: Sequence[str]) -> None:
    _check_structure(lines)
    for number, line in enumerate(lines, 1):
        _check_line(number, line)


def _check_structure(lines: Sequence[str]) -> None:
    """SDP lines only, v=0 first, a well-formed o= line and at least one m= line."""
    if not lines:
        raise SdpParseError("empty SDP")
    for number, line in enumerate(lines, 1):
        if not _LINE.match(line):
            raise SdpParseError(f"line {number}: not an SDP line: {_show(line)}")
    if lines[0] != "v=0":
        raise SdpParseError(f"line 1: SDP must start with v=0, found {_show(lines[0])}")
    origins = [line for line in lines if line.startswith("o=")]
    if not origins:
        raise SdpParseError("no o= (origin) line")
    if not _ORIGIN.match(origins[0]):
        raise SdpParseError(f"malformed o= line: {_show(origins[0])}")
    if not any(line.startswith("m=") for line in lines):
        raise SdpParseError("no m= (media) line")


def _check_line(number: int, line: str) -> None:
    """The m=, c= and rtpmap lines sdp_transform would misread rather than refuse."""
    if line.startswith("m="):
        _check_media_line(number, line)
    elif line.startswith("c=") and not _CONNECTION.match(line):
        raise SdpParseError(f"line {number}: malformed c= line: {_show(line)}")
    elif line.startswith("a=rtpmap:") and not _RTPMAP.match(line):
        raise SdpParseError(f"line {number}: malformed rtpmap: {_show(line)}")


def _check_media_line(number: int, line: str) -> None:
    match = _MEDIA.match(line)
    if not match:
        raise SdpParseError(f"line {number}: malformed m= line: {_show(line)}")
    port_text, protocol, formats = match.group(2), match.group(3), match.group(4) or ""
    if not formats.split():
        # RFC 8866 section 5.14: at least one format; a line cut short usually ends here.
        raise SdpParseError(f"line {number}: m= line has no formats: {_show(line)}")
    port = _PORT.match(port_text)
    if not port or int(port.group(1)) > 65535:
        raise SdpParseError(f"line {number}: bad port {port_text!r} in {_show(line)}")
    if "RTP" in protocol.upper():
        for fmt in formats.split():
            if not fmt.isdigit() or int(fmt) > 127:
                raise SdpParseError(f"line {number}: bad RTP payload type {fmt!r} in {_show(line)}")


def parse_session(text: object) -> Session:
    """Validate and parse an SDP; the result is sdp_transform's dictionary, shared between
    callers that parse the same text (a call reads the browser's offer several times), so
    it must not be changed."""
    if isinstance(text, str):
        return _parse_cached(text)
    return _parse(text)


@functools.lru_cache(maxsize=128)
def _parse_cached(text: str) -> Session:
    return _parse(text)


def _parse(text: object) -> Session:
    lines = split_lines(text)
    _check_lines(lines)
    with guarded("parsing SDP"):
        session = cast(Session, sdp_transform.parse("\r\n".join(lines) + "\r\n"))
    for index, media in enumerate(session.get("media", [])):
        if not isinstance(media.get("port"), int) or "type" not in media:
            raise SdpParseError(f"m= line {index + 1}: could not be parsed")
    return session


def formats_of(media: Media) -> list[str]:
    return str(media.get("payloads", "")).split()


def is_active(media: Media) -> bool:
    # A bundled m= line may carry port 0 with a=bundle-only and still be in use (RFC 8843).
    return int(media["port"]) != 0 or "bundleOnly" in media


def first_audio(session: Session, *, active_only: bool) -> tuple[int, Media]:
    media_list: list[Media] = session.get("media", [])
    audio = [(i, m) for i, m in enumerate(media_list) if m.get("type") == "audio"]
    if not audio:
        kinds = ", ".join(str(m.get("type")) for m in media_list) or "none"
        raise SdpNegotiationError(f"no audio m= line (media present: {kinds})")
    if active_only:
        for index, media in audio:
            if is_active(media):
                return index, media
        raise SdpNegotiationError("audio stream rejected (every audio m= line has port 0)")
    return audio[0]


def direction_of(session: Session, media: Media) -> Direction:
    for value in (media.get("direction"), session.get("direction")):
        for direction in DIRECTIONS:
            if value == direction:
                return direction
    return "sendrecv"


def connection_address(session: Session, media: Media) -> str:
    for place in (media, session):
        connection = place.get("connection")
        if isinstance(connection, dict) and connection.get("ip"):
            # Multicast addresses carry /ttl and /count suffixes; only the address matters here.
            return str(connection["ip"]).split("/")[0].strip("[]")
    raise SdpNegotiationError("no connection address (no c= line for the audio stream)")


def _fmtp(media: Media, payload: int) -> str | None:
    for entry in media.get("fmtp", []):
        if entry.get("payload") == payload:
            return str(entry.get("config", "")).strip() or None
    return None


def media_codecs(media: Media) -> list[Codec]:
    """Every format of an m= line that we can name, in the m= line's order."""
    rtpmaps = {entry.get("payload"): entry for entry in media.get("rtp", [])}
    codecs: list[Codec] = []
    for fmt in formats_of(media):
        if not fmt.isdigit():
            continue
        payload = int(fmt)
        entry = rtpmaps.get(payload)
        if entry is not None:
            name = str(entry.get("codec", ""))
            rate = entry.get("rate")
            if not isinstance(rate, int):
                raise SdpParseError(f"rtpmap for payload {payload} has no clock rate")
            encoding = entry.get("encoding")
            channels = int(encoding) if encoding not in (None, "") else 1
        elif payload in STATIC_PAYLOADS:
            name, rate = STATIC_PAYLOADS[payload]
            channels = 1
        else:
            continue
        lower = name.lower()
        if lower in CANONICAL_RATES:
            name = CANONICAL_RATES[lower][0]
        elif lower == TELEPHONE_EVENT:
            name = TELEPHONE_EVENT
        codecs.append(Codec(name, rate, channels, payload, _fmtp(media, payload)))
    return codecs


def split_codecs(
    codecs: Sequence[Codec], allowed: Sequence[str]
) -> tuple[tuple[Codec, ...], tuple[Codec, ...]]:
    """(audio codecs whose name is allowed and clock rate is right, telephone-events)."""
    wanted = {name.lower() for name in allowed}
    audio: list[Codec] = []
    events: list[Codec] = []
    for codec in codecs:
        lower = codec.name.lower()
        if lower == TELEPHONE_EVENT:
            events.append(codec)
        elif lower in wanted and lower in CANONICAL_RATES:
            if codec.clock_rate == CANONICAL_RATES[lower][1]:
                audio.append(codec)
    return tuple(audio), tuple(events)


def ptime_of(media: Media) -> int | None:
    value = media.get("ptime")
    if isinstance(value, int | float) and value > 0:
        return int(value)
    return None


def offered_names(codecs: Sequence[Codec]) -> str:
    return ", ".join(f"{c.name}/{c.clock_rate}" for c in codecs) or "none"
