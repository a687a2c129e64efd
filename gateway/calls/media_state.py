"""The SIP side's session description of one call: what we offered or answered, what the
far end said, and the numbers RFC 3264 wants kept (session id, increasing version)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

import sdp

_HOLD_ADDRESSES = ("0.0.0.0", "::")


@dataclass
class SipMediaState:
    address: str
    port: int
    codec: sdp.Codec | None = None
    telephone_event: sdp.Codec | None = None
    remote: sdp.RemoteMedia | None = None
    direction: sdp.Direction = "sendrecv"

    def __post_init__(self) -> None:
        self.session_id = secrets.randbelow(2**62) + 1
        self.version = 0

    @property
    def remote_holds(self) -> bool:
        """RFC 3264 section 8.4 (and RFC 2543's c=0.0.0.0): the far end stopped sending."""
        remote = self.remote
        if remote is None:
            return False
        return remote.direction in ("sendonly", "inactive") or remote.address in _HOLD_ADDRESSES

    def _next_version(self) -> int:
        self.version += 1
        return self.version

    def offer(self, direction: sdp.Direction = "sendrecv") -> str:
        """A re-offer of the current codec (hold, resume, refresh, a REFER's new call)."""
        assert self.codec is not None
        self.direction = direction
        events = (self.telephone_event,) if self.telephone_event else ()
        return sdp.build_offer(
            address=self.address,
            port=self.port,
            codecs=(self.codec,),
            telephone_events=events,
            session_id=self.session_id,
            session_version=self._next_version(),
            direction=direction,
        ).sdp

    def full_offer(self, preferred: sdp.Codec | None) -> sdp.SipOffer:
        """Every codec we can carry, `preferred` first: late-offer answers and new calls."""
        codecs, events = sdp.default_codecs(preferred)
        return sdp.build_offer(
            address=self.address,
            port=self.port,
            codecs=codecs,
            telephone_events=events,
            session_id=self.session_id,
            session_version=self._next_version(),
        )

    def take_answer(self, text: str, offered: sdp.SipOffer) -> sdp.RemoteMedia:
        remote = sdp.parse_remote(text)
        self.codec = sdp.answer_codec(remote, offered)
        self.telephone_event = remote.telephone_event_for(self.codec)
        self.remote = remote
        return remote

    def answer(self, text: str, *, hold: bool = False) -> str:
        """Answer a far-end offer, keeping the current codec when it is still offered."""
        remote = sdp.parse_remote(text)
        codec = remote.codec
        if self.codec is not None:
            codec = next((c for c in remote.codecs if c.same_format(self.codec)), codec)
        self.codec = codec
        self.telephone_event = remote.telephone_event_for(codec)
        self.remote = remote
        mirrored = {"sendonly": "recvonly", "recvonly": "sendonly", "inactive": "inactive"}
        direction: sdp.Direction = mirrored.get(remote.direction, "sendrecv")  # type: ignore[assignment]
        if hold:
            direction = "inactive" if direction in ("recvonly", "inactive") else "sendonly"
        self.direction = direction
        return sdp.build_answer(
            remote,
            address=self.address,
            port=self.port,
            codec=codec,
            telephone_event=self.telephone_event,
            session_id=self.session_id,
            session_version=self._next_version(),
            direction=direction,
        )
