"""Values shared by the SDP functions: codecs, directions, offers and remote media."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .errors import SdpNegotiationError

SUPPORTED_CODECS: tuple[str, ...] = ("opus", "G722", "PCMU", "PCMA")

TELEPHONE_EVENT = "telephone-event"

# rtpmap name (lower case) -> canonical spelling and the RTP clock rate it must have.
CANONICAL_RATES: dict[str, tuple[str, int]] = {
    "opus": ("opus", 48000),
    "g722": ("G722", 8000),
    "pcmu": ("PCMU", 8000),
    "pcma": ("PCMA", 8000),
}

# RFC 3551 static payload types that peers may list without an rtpmap line.
STATIC_PAYLOADS: dict[int, tuple[str, int]] = {
    0: ("PCMU", 8000),
    8: ("PCMA", 8000),
    9: ("G722", 8000),
}

Direction = Literal["sendrecv", "sendonly", "recvonly", "inactive"]
DIRECTIONS: tuple[Direction, ...] = ("sendrecv", "sendonly", "recvonly", "inactive")


@dataclass(frozen=True)
class Codec:
    name: str
    clock_rate: int
    channels: int
    payload_type: int
    fmtp: str | None = None

    @property
    def sample_rate(self) -> int:
        # RFC 3551 section 4.5.2: G.722 is sampled at 16 kHz but its RTP clock runs at 8 kHz.
        if self.name == "G722":
            return 16000
        return self.clock_rate

    def same_format(self, other: Codec) -> bool:
        """Same encoding, clock rate and channels, whatever the payload type numbers."""
        return (self.name.lower(), self.clock_rate, self.channels) == (
            other.name.lower(),
            other.clock_rate,
            other.channels,
        )


@dataclass(frozen=True)
class SipOffer:
    sdp: str
    codecs: tuple[Codec, ...]
    telephone_events: tuple[Codec, ...]


@dataclass(frozen=True)
class MediaSection:
    """One m= line of an SDP, as much as an answer needs to mirror it (RFC 3264 section 6)."""

    kind: str
    protocol: str
    formats: str


@dataclass(frozen=True)
class RemoteMedia:
    address: str
    port: int
    codecs: tuple[Codec, ...]
    telephone_events: tuple[Codec, ...]
    direction: Direction
    ptime: int | None
    # Every m= line of the SDP and which one is the audio stream above, so that an answer
    # can keep the offer's m= line count and order.
    sections: tuple[MediaSection, ...] = ()
    audio_index: int = 0

    @property
    def codec(self) -> Codec:
        if not self.codecs:
            raise SdpNegotiationError("the remote audio stream has no supported codec")
        return self.codecs[0]

    def telephone_event_for(self, codec: Codec) -> Codec | None:
        for event in self.telephone_events:
            if event.clock_rate == codec.clock_rate:
                return event
        for event in self.telephone_events:
            if event.clock_rate == 8000:
                return event
        return None
