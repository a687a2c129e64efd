"""Reading a SIP peer's SDP and choosing codecs on both legs."""

from __future__ import annotations

from collections.abc import Sequence

from .errors import SdpNegotiationError
from .model import SUPPORTED_CODECS, Codec, MediaSection, RemoteMedia, SipOffer
from .parse import (
    connection_address,
    direction_of,
    first_audio,
    guarded,
    media_codecs,
    offered_names,
    parse_session,
    ptime_of,
    split_codecs,
)


def parse_remote(sdp_text: str, codecs: Sequence[str] = SUPPORTED_CODECS) -> RemoteMedia:
    """The far end's audio stream: its first audio m= line, supported codecs only."""
    session = parse_session(sdp_text)
    with guarded("reading the remote SDP"):
        index, media = first_audio(session, active_only=False)
        port = int(media["port"])
        if port == 0:
            raise SdpNegotiationError("audio stream rejected (port 0 on the audio m= line)")
        offered = media_codecs(media)
        audio, events = split_codecs(offered, codecs)
        if not audio:
            raise SdpNegotiationError(
                f"no supported codec on the audio m= line (offered: {offered_names(offered)}; "
                f"supported: {', '.join(codecs)})"
            )
        sections = tuple(
            MediaSection(str(m["type"]), str(m.get("protocol", "")), str(m.get("payloads", "")))
            for m in session["media"]
        )
        return RemoteMedia(
            address=connection_address(session, media),
            port=port,
            codecs=audio,
            telephone_events=events,
            direction=direction_of(session, media),
            ptime=ptime_of(media),
            sections=sections,
            audio_index=index,
        )


def answer_codec(answer: RemoteMedia, offer: SipOffer) -> Codec:
    """The answer's first codec that we offered, with the answer's payload type."""
    for codec in answer.codecs:
        if any(codec.same_format(ours) for ours in offer.codecs):
            return codec
    raise SdpNegotiationError(
        f"the answer has no codec we offered (answered: {offered_names(answer.codecs)}; "
        f"offered: {offered_names(offer.codecs)})"
    )


def browser_codec_for(browser_sdp: str, sip_codec: Codec) -> Codec:
    """The browser's codec for the SIP leg's codec, or its favourite one to transcode from."""
    session = parse_session(browser_sdp)
    with guarded("reading the browser offer"):
        _, media = first_audio(session, active_only=True)
        offered = media_codecs(media)
        audio, _ = split_codecs(offered, SUPPORTED_CODECS)
        if not audio:
            raise SdpNegotiationError(
                f"no supported codec in the browser offer (offered: {offered_names(offered)})"
            )
        for codec in audio:
            if (codec.name.lower(), codec.clock_rate) == (
                sip_codec.name.lower(),
                sip_codec.clock_rate,
            ):
                return codec
        return audio[0]
