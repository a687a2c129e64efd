"""SDP rewriting: browser offer -> plain SIP offer, offer restriction, plain answers."""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterator, Sequence
from typing import Any

import sdp_transform

from .errors import SdpNegotiationError
from .model import SUPPORTED_CODECS, TELEPHONE_EVENT, Codec, Direction, RemoteMedia, SipOffer
from .parse import (
    direction_of,
    first_audio,
    formats_of,
    guarded,
    media_codecs,
    offered_names,
    parse_session,
    split_codecs,
    split_lines,
)

PTIME = 20
# RFC 4733 events 0-15 are the DTMF digits, 16 is flash; what SIP peers commonly advertise.
TELEPHONE_EVENT_FMTP = "0-16"

_MIRROR: dict[Direction, Direction] = {
    "sendrecv": "sendrecv",
    "sendonly": "recvonly",
    "recvonly": "sendonly",
    "inactive": "inactive",
}


def _ip_version(address: str) -> int:
    if not address or any(ch.isspace() for ch in address):
        raise ValueError(f"bad media address {address!r}")
    try:
        return ipaddress.ip_address(address).version
    except ValueError:
        return 4  # a host name: SDP allows one after "IN IP4"


def _check_port(port: int) -> None:
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ValueError(f"bad media port {port!r}")


def _session(address: str, session_id: int | None, session_version: int) -> dict[str, Any]:
    version = _ip_version(address)
    ident = session_id if session_id is not None else secrets.randbelow(2**62) + 1
    return {
        "version": 0,
        "origin": {
            "username": "sipgw",
            "sessionId": ident,
            "sessionVersion": session_version,
            "netType": "IN",
            "ipVer": version,
            "address": address,
        },
        "name": "sipgw",
        "connection": {"version": version, "ip": address},
        "timing": {"start": 0, "stop": 0},
        "media": [],
    }


def _audio_media(
    port: int, codecs: Sequence[Codec], fmtps: dict[int, str], direction: Direction
) -> dict[str, Any]:
    rtp: list[dict[str, Any]] = []
    for codec in codecs:
        entry: dict[str, Any] = {
            "payload": codec.payload_type,
            "codec": codec.name,
            "rate": codec.clock_rate,
        }
        if codec.channels != 1:
            entry["encoding"] = codec.channels
        rtp.append(entry)
    return {
        "type": "audio",
        "port": port,
        "protocol": "RTP/AVP",
        "payloads": " ".join(str(codec.payload_type) for codec in codecs),
        "rtp": rtp,
        "fmtp": [{"payload": pt, "config": config} for pt, config in fmtps.items()],
        "ptime": PTIME,
        "direction": direction,
    }


def _write(session: dict[str, Any]) -> str:
    return str(sdp_transform.write(session))


def browser_offer_to_sip(
    browser_sdp: str,
    *,
    address: str,
    port: int,
    session_id: int | None = None,
    session_version: int = 0,
    codecs: Sequence[str] = SUPPORTED_CODECS,
    transcodable: Sequence[str] = (),
    telephone_event: bool = False,
) -> SipOffer:
    """A plain RTP/AVP offer carrying the browser's audio codecs, in the browser's order.

    Codecs named in `transcodable` that the browser did not offer follow the browser's
    own: the gateway can transcode them, so a SIP peer that speaks none of the browser's
    codecs (a G.711-only trunk against an Opus-only browser) still gets a call.
    With `telephone_event`, telephone-event/8000 is offered even when the browser did not
    offer it: the gateway sends and reads RFC 4733 itself.
    """
    _check_port(port)
    session = _session(address, session_id, session_version)
    browser = parse_session(browser_sdp)
    with guarded("reading the browser offer"):
        _, media = first_audio(browser, active_only=True)
        offered = media_codecs(media)
        audio, events = split_codecs(offered, codecs)
        if not audio:
            raise SdpNegotiationError(
                f"no supported codec in the browser offer (offered: {offered_names(offered)}; "
                f"supported: {', '.join(codecs)})"
            )
        audio = audio + _transcodable_extras(audio, events, transcodable)
        if telephone_event and not any(e.clock_rate == 8000 for e in events):
            used = {c.payload_type for c in (*audio, *events)}
            free = next(pt for pt in (101, *range(96, 128)) if pt not in used)
            events = (*events, Codec(TELEPHONE_EVENT, 8000, 1, free, TELEPHONE_EVENT_FMTP))
        chosen = audio + events
        fmtps = {
            c.payload_type: c.fmtp for c in chosen if c.fmtp and c.name in ("opus", TELEPHONE_EVENT)
        }
        session["media"].append(_audio_media(port, chosen, fmtps, direction_of(browser, media)))
    return SipOffer(sdp=_write(session), codecs=audio, telephone_events=events)


# RFC 3551 static payload types; Opus needs a dynamic one.
_STATIC = {
    "PCMU": Codec("PCMU", 8000, 1, 0),
    "PCMA": Codec("PCMA", 8000, 1, 8),
    "G722": Codec("G722", 8000, 1, 9),
}
_OPUS_FMTP = "minptime=10;useinbandfec=1"


def _transcodable_extras(
    audio: Sequence[Codec], events: Sequence[Codec], names: Sequence[str]
) -> tuple[Codec, ...]:
    have = {c.name.lower() for c in audio}
    used = {c.payload_type for c in (*audio, *events)}
    extras: list[Codec] = []
    for name in names:
        if name.lower() in have:
            continue
        if name in _STATIC:
            codec = _STATIC[name]
            if codec.payload_type in used:
                continue
        elif name == "opus":
            free = next((pt for pt in range(96, 128) if pt not in used), None)
            if free is None:
                continue
            codec = Codec("opus", 48000, 2, free, _OPUS_FMTP)
        else:
            continue
        used.add(codec.payload_type)
        have.add(name.lower())
        extras.append(codec)
    return tuple(extras)


def restrict_offer(browser_sdp: str, keep: Codec) -> str:
    """The browser offer with its audio formats cut down to `keep` and telephone-event."""
    session = parse_session(browser_sdp)
    with guarded("restricting the browser offer"):
        index, media = first_audio(session, active_only=True)
        events = {c.payload_type for c in media_codecs(media) if c.name == TELEPHONE_EVENT}
        formats = [int(fmt) for fmt in formats_of(media) if fmt.isdigit()]
        if keep.payload_type not in formats:
            raise SdpNegotiationError(
                f"payload type {keep.payload_type} ({keep.name}) is not in the browser offer"
            )
        kept = [pt for pt in formats if pt == keep.payload_type or pt in events]
        removed = set(formats) - set(kept)
        # Edited line by line rather than through sdp_transform.write: that writer loses
        # data (it drops "tcptype active" and all that follows from TCP candidates, and
        # respaces msid-semantic), and the browser's other lines must stay as they were.
        lines = _restrict_lines(split_lines(browser_sdp), index, kept, removed)
        text = "\r\n".join(lines) + "\r\n"
    parse_session(text)  # still valid SDP for sdp_transform and for aiortc
    return text


def _restrict_lines(
    lines: Sequence[str], section: int, kept: Sequence[int], removed: set[int]
) -> Iterator[str]:
    current = -1
    for line in lines:
        if line.startswith("m="):
            current += 1
            if current == section:
                kind, port, protocol = line[2:].split()[:3]
                yield f"m={kind} {port} {protocol} {' '.join(str(pt) for pt in kept)}"
                continue
        if current == section and _format_of(line) in removed:
            continue
        yield line


def _format_of(line: str) -> int | None:
    """The payload type an a=rtpmap/fmtp/rtcp-fb line is about, if it is one of those."""
    for prefix in ("a=rtpmap:", "a=fmtp:", "a=rtcp-fb:"):
        if line.startswith(prefix):
            value = line[len(prefix) :].split(" ", 1)[0]
            return int(value) if value.isdigit() else None
    return None


def build_answer(
    remote: RemoteMedia,
    *,
    address: str,
    port: int,
    codec: Codec,
    telephone_event: Codec | None,
    session_id: int | None = None,
    session_version: int = 0,
    direction: Direction | None = None,
) -> str:
    """A plain RTP/AVP answer to a SIP offer, one m= line per offered m= line (RFC 3264)."""
    _check_port(port)
    session = _session(address, session_id, session_version)
    chosen = [codec] + ([telephone_event] if telephone_event is not None else [])
    fmtps = {telephone_event.payload_type: TELEPHONE_EVENT_FMTP} if telephone_event else {}
    audio = _audio_media(port, chosen, fmtps, direction or _MIRROR[remote.direction])
    if not remote.sections:
        session["media"].append(audio)
        return _write(session)
    for index, section in enumerate(remote.sections):
        if index == remote.audio_index:
            session["media"].append(audio)
        else:
            # RFC 3264 section 6: a stream we do not take is answered with port 0, keeping its
            # place; the format list must still be non-empty.
            session["media"].append(
                {
                    "type": section.kind,
                    "port": 0,
                    "protocol": section.protocol,
                    "payloads": section.formats.split()[0] if section.formats else "0",
                }
            )
    return _write(session)


def build_offer(
    *,
    address: str,
    port: int,
    codecs: Sequence[Codec],
    telephone_events: Sequence[Codec] = (),
    session_id: int | None = None,
    session_version: int = 0,
    direction: Direction = "sendrecv",
) -> SipOffer:
    """A plain RTP/AVP offer of our own: late-offer 200 OKs, re-INVITEs (hold), REFER calls."""
    _check_port(port)
    if not codecs:
        raise SdpNegotiationError("an offer needs at least one codec")
    session = _session(address, session_id, session_version)
    chosen = [*codecs, *telephone_events]
    fmtps = {c.payload_type: c.fmtp for c in codecs if c.fmtp}
    fmtps.update({e.payload_type: TELEPHONE_EVENT_FMTP for e in telephone_events})
    session["media"].append(_audio_media(port, chosen, fmtps, direction))
    return SipOffer(
        sdp=_write(session), codecs=tuple(codecs), telephone_events=tuple(telephone_events)
    )


def default_codecs(preferred: Codec | None = None) -> tuple[tuple[Codec, ...], tuple[Codec, ...]]:
    """Every codec we can send or transcode, `preferred` first, and telephone-event/8000."""
    opus = Codec("opus", 48000, 2, 111, _OPUS_FMTP)
    codecs = [opus, _STATIC["G722"], _STATIC["PCMU"], _STATIC["PCMA"]]
    if preferred is not None:
        codecs = [preferred] + [
            c
            for c in codecs
            if c.name.lower() != preferred.name.lower() and c.payload_type != preferred.payload_type
        ]
    used = {c.payload_type for c in codecs}
    event_pt = next(pt for pt in (101, *range(96, 128)) if pt not in used)
    return tuple(codecs), (Codec("telephone-event", 8000, 1, event_pt, TELEPHONE_EVENT_FMTP),)
