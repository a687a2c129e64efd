"""SDP rewriting between WebRTC browsers and plain SIP RTP/AVP peers.

A pure library (no I/O): it parses with sdp_transform, validates what that parser lets
through, and raises only SdpError subclasses on bad input.
"""

from .errors import SdpError, SdpNegotiationError, SdpParseError
from .model import SUPPORTED_CODECS, Codec, Direction, MediaSection, RemoteMedia, SipOffer
from .negotiate import answer_codec, browser_codec_for, parse_remote
from .rewrite import (
    browser_offer_to_sip,
    build_answer,
    build_offer,
    default_codecs,
    restrict_offer,
)
from .webrtc import check_webrtc

__all__ = [
    "SUPPORTED_CODECS",
    "Codec",
    "Direction",
    "MediaSection",
    "RemoteMedia",
    "SdpError",
    "SdpNegotiationError",
    "SdpParseError",
    "SipOffer",
    "answer_codec",
    "browser_codec_for",
    "browser_offer_to_sip",
    "build_answer",
    "build_offer",
    "check_webrtc",
    "default_codecs",
    "parse_remote",
    "restrict_offer",
]
