"""Bad input: every failure is an SdpError subclass with a message that says what was wrong."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import pytest

import sdp
from sdp import (
    Codec,
    SdpError,
    SdpNegotiationError,
    SdpParseError,
    browser_codec_for,
    browser_offer_to_sip,
    parse_remote,
    restrict_offer,
)

CORPUS = Path(__file__).parent / "sdp_corpus"
MALFORMED = CORPUS / "malformed"

# file -> (exception, text the message must contain)
EXPECTED: dict[str, tuple[type[SdpError], str]] = {
    "empty.sdp": (SdpParseError, "empty SDP"),
    "whitespace_only.sdp": (SdpParseError, "empty SDP"),
    "binary_junk.sdp": (SdpParseError, "line 1: not an SDP line"),
    "html_not_sdp.sdp": (SdpParseError, "line 1: not an SDP line: '<html>"),
    "missing_m.sdp": (SdpParseError, "no m= (media) line"),
    "missing_origin.sdp": (SdpParseError, "no o= (origin) line"),
    "missing_version.sdp": (SdpParseError, "must start with v=0"),
    "bad_port.sdp": (SdpParseError, "line 6: bad port 'abc'"),
    "port_too_big.sdp": (SdpParseError, "line 6: bad port '70000'"),
    "bad_payload_type.sdp": (SdpParseError, "bad RTP payload type 'PCMU'"),
    "bad_rtpmap.sdp": (SdpParseError, "line 7: malformed rtpmap: 'a=rtpmap:0 PCMU'"),
    "bad_connection.sdp": (SdpParseError, "line 4: malformed c= line"),
    "truncated.sdp": (SdpParseError, "m= line has no formats: 'm=audio 9 UDP/TL'"),
    "video_only.sdp": (SdpNegotiationError, "no audio m= line (media present: video)"),
    "audio_rejected.sdp": (SdpNegotiationError, "audio stream rejected"),
    "no_connection.sdp": (SdpNegotiationError, "no connection address"),
    "no_common_codec.sdp": (SdpNegotiationError, "offered: G729/8000, G723/8000"),
}


def load(path: Path) -> str:
    # latin-1 maps every byte to a character, so the binary junk still reaches the parser as text.
    return path.read_bytes().decode("latin-1")


def test_every_malformed_file_has_an_expectation() -> None:
    assert sorted(p.name for p in MALFORMED.glob("*.sdp")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parse_remote_rejects(name: str) -> None:
    error, text = EXPECTED[name]
    with pytest.raises(error) as caught:
        parse_remote(load(MALFORMED / name))
    assert text in str(caught.value)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_browser_side_rejects(name: str) -> None:
    error, text = EXPECTED[name]
    sdp = load(MALFORMED / name)
    if name == "no_connection.sdp":
        # A browser offer needs no c= of ours: it converts, and only parse_remote minds.
        assert browser_offer_to_sip(sdp, address="192.0.2.1", port=4000).codecs
        return
    if name == "audio_rejected.sdp":
        text = "every audio m= line has port 0"
    if name == "no_common_codec.sdp":
        text = "G729/8000"
    with pytest.raises(error, match=None) as caught:
        browser_offer_to_sip(sdp, address="192.0.2.1", port=4000)
    assert text in str(caught.value)
    with pytest.raises(error):
        browser_codec_for(sdp, Codec("PCMU", 8000, 1, 0))
    with pytest.raises(error):
        restrict_offer(sdp, Codec("PCMU", 8000, 1, 0))


def test_not_text_at_all() -> None:
    for value in (b"v=0\r\n", None, 42):
        with pytest.raises(SdpParseError, match="SDP must be text"):
            parse_remote(value)  # type: ignore[arg-type]


def test_long_offending_line_is_shortened_in_the_message() -> None:
    with pytest.raises(SdpParseError) as caught:
        parse_remote("v=0\r\n" + "x" * 5000)
    assert len(str(caught.value)) < 200


def test_error_hierarchy() -> None:
    assert issubclass(SdpParseError, SdpError) and issubclass(SdpNegotiationError, SdpError)
    assert issubclass(SdpError, ValueError)


OPERATIONS: list[Callable[[str], object]] = [
    parse_remote,
    lambda text: browser_offer_to_sip(text, address="192.0.2.1", port=4000),
    lambda text: browser_codec_for(text, Codec("PCMU", 8000, 1, 0)),
    lambda text: restrict_offer(text, Codec("PCMU", 8000, 1, 0)),
]


def _only_sdp_errors(text: str) -> None:
    for operation in OPERATIONS:
        try:
            operation(text)
        except SdpError:
            pass


@pytest.mark.parametrize("name", sorted(p.name for p in CORPUS.glob("*.sdp")))
def test_truncations_and_mutations_raise_only_sdp_errors(name: str) -> None:
    text = (CORPUS / name).read_bytes().decode("utf-8")
    for cut in range(0, len(text), max(7, len(text) // 150)):
        _only_sdp_errors(text[:cut])
    rng = random.Random(name)
    alphabet = "0123456789 /:=-abcxyz\r\n\x00\xff"
    for _ in range(150):
        chars = list(text)
        for _ in range(rng.randrange(1, 6)):
            chars[rng.randrange(len(chars))] = rng.choice(alphabet)
        _only_sdp_errors("".join(chars))
    lines = text.splitlines()
    for _ in range(50):
        _only_sdp_errors("\r\n".join(rng.sample(lines, len(lines))))


# --- browser SDP must be WebRTC (sdp.check_webrtc) ---------------------------------------


def _corpus(name: str) -> str:
    return (Path(__file__).parent / "sdp_corpus" / name).read_text()


@pytest.mark.parametrize(
    "name", ["chrome_offer_gathered.sdp", "firefox_offer.sdp", "safari_offer.sdp"]
)
def test_browser_offers_are_webrtc(name: str) -> None:
    sdp.check_webrtc(_corpus(name))


@pytest.mark.parametrize(
    ("strip", "reason"),
    [
        ("a=fingerprint:", "no DTLS fingerprint"),
        ("a=ice-ufrag:", "no ICE ufrag"),
        ("a=ice-pwd:", "no ICE password"),
    ],
)
def test_browser_sdp_without_ice_or_dtls_is_refused(strip: str, reason: str) -> None:
    """aiortc would take it and then fail in a task of its own (a fuzzed page found it)."""
    text = "\r\n".join(
        line
        for line in _corpus("chrome_offer_gathered.sdp").splitlines()
        if not line.startswith(strip)
    )
    with pytest.raises(sdp.SdpParseError, match=reason):
        sdp.check_webrtc(text + "\r\n")
