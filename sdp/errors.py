"""Typed SDP errors: every failure on input says what was wrong and where."""

from __future__ import annotations


class SdpError(ValueError):
    """Base of every error this package raises on bad SDP input."""


class SdpParseError(SdpError):
    """The text is not usable SDP: not SDP at all, a missing or malformed line."""


class SdpNegotiationError(SdpError):
    """The SDP parses but cannot be used: no audio, audio rejected, no common codec."""
