"""The SDP library against a corpus of real SDPs (tests/sdp_corpus, see SOURCES.md there)."""

from __future__ import annotations

from pathlib import Path

import pytest
import sdp_transform

from sdp import (
    SUPPORTED_CODECS,
    Codec,
    SdpNegotiationError,
    SipOffer,
    answer_codec,
    browser_codec_for,
    browser_offer_to_sip,
    build_answer,
    parse_remote,
    restrict_offer,
)

CORPUS = Path(__file__).parent / "sdp_corpus"
ADDRESS = "203.0.113.7"
PORT = 40000


def load(name: str) -> str:
    # newline="" keeps CRLF/LF exactly as stored: both kinds are in the corpus on purpose.
    return (CORPUS / name).read_bytes().decode("utf-8")


# file -> (audio codecs in order as name/pt, telephone-event payload types, direction)
BROWSER_OFFERS: dict[str, tuple[list[str], list[int], str]] = {
    "chrome_offer.sdp": (["opus/111", "G722/9", "PCMU/0", "PCMA/8"], [110, 126], "sendrecv"),
    "chrome_offer_gathered.sdp": (
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [110, 126],
        "sendrecv",
    ),
    "chrome_offer_audio_video_datachannel.sdp": (
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [110, 126],
        "sendrecv",
    ),
    "chrome_offer_recvonly.sdp": (
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [110, 126],
        "recvonly",
    ),
    "chrome_offer_inactive.sdp": (
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [110, 126],
        "inactive",
    ),
    "chrome_2018_offer.sdp": (
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [110, 112, 113, 126],
        "sendrecv",
    ),
    "firefox_offer.sdp": (["opus/109", "G722/9", "PCMU/0", "PCMA/8"], [101], "sendrecv"),
    "safari_offer.sdp": (["opus/111", "G722/9", "PCMU/0", "PCMA/8"], [110, 113, 126], "sendrecv"),
}

# Attributes that only make sense between WebRTC peers and must not reach a SIP peer.
WEBRTC_ONLY = (
    "a=ice-ufrag",
    "a=ice-pwd",
    "a=ice-options",
    "a=ice-lite",
    "a=candidate",
    "a=end-of-candidates",
    "a=fingerprint",
    "a=setup",
    "a=rtcp-mux",
    "a=rtcp-rsize",
    "a=group",
    "a=msid",
    "a=ssrc",
    "a=rtcp-fb",
    "a=extmap",
    "a=mid",
    "a=rtcp:",
    "a=rtcp-xr",
    "a=extmap-allow-mixed",
)

# file -> (address, port, first codec name/pt, all codecs, telephone-event pts, direction, ptime)
REMOTE: dict[str, tuple[str, int, list[str], list[int], str, int | None]] = {
    "sipp_uas_answer.sdp": ("127.0.0.1", 16000, ["PCMU/0"], [], "sendrecv", None),
    "sipp_uas_answer_ipv6.sdp": ("::1", 16500, ["PCMU/0"], [], "sendrecv", None),
    "sipp_uac_offer.sdp": ("127.0.0.1", 16100, ["PCMU/0"], [], "sendrecv", None),
    "baresip_answer.sdp": (
        "127.0.0.1",
        26040,
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [126],
        "recvonly",
        20,
    ),
    "baresip_answer_inactive.sdp": (
        "127.0.0.1",
        26092,
        ["opus/111", "G722/9", "PCMU/0", "PCMA/8"],
        [126],
        "inactive",
        20,
    ),
    "baresip_offer.sdp": (
        "127.0.0.1",
        26078,
        ["PCMU/0", "PCMA/8", "G722/9", "opus/96"],
        [101],
        "sendrecv",
        20,
    ),
    "asterisk_offer.sdp": (
        "190.239.16.180",
        10530,
        ["PCMU/0", "PCMA/8", "G722/9"],
        [101],
        "sendrecv",
        20,
    ),
    "asterisk_webrtc_answer.sdp": (
        "10.94.101.195",
        10034,
        ["opus/109", "G722/9", "PCMA/8", "PCMU/0"],
        [101],
        "sendrecv",
        20,
    ),
    "freeswitch_webrtc_answer.sdp": ("1.2.3.4", 16628, ["PCMA/8"], [101], "sendrecv", 20),
    "cisco_cucm_offer.sdp": (
        "33.33.41.40",
        18860,
        ["opus/114", "G722/9", "PCMU/0", "PCMA/8"],
        [101],
        "sendrecv",
        None,
    ),
    "rtpengine_ipv6_offer.sdp": (
        "2001:db8:4321::1",
        30000,
        ["opus/114", "G722/9", "PCMU/0", "PCMA/8"],
        [101],
        "sendrecv",
        None,
    ),
    "rtpengine_answer_media_c.sdp": ("198.51.100.14", 2000, ["G722/9"], [], "sendrecv", None),
    "pjsip_pjmedia_offer.sdp": ("127.0.0.1", 4000, ["PCMU/0"], [101], "sendrecv", None),
    "twilio_trunk_offer.sdp": ("10.0.13.72", 40150, ["PCMU/0", "PCMA/8"], [101], "sendrecv", 20),
    "twilio_siprec_offer.sdp": (
        "168.86.139.0",
        17588,
        ["PCMU/0", "PCMA/8"],
        [101],
        "sendonly",
        20,
    ),
}


def names(codecs: tuple[Codec, ...]) -> list[str]:
    return [f"{c.name}/{c.payload_type}" for c in codecs]


def audio_lines(sdp: str) -> list[str]:
    return [line for line in sdp.split("\r\n") if line]


def test_corpus_is_big_enough_and_described() -> None:
    files = sorted(p.name for p in CORPUS.glob("*.sdp"))
    assert len(files) >= 20
    sources = (CORPUS / "SOURCES.md").read_text(encoding="utf-8")
    missing = [name for name in files if name not in sources]
    assert missing == []
    assert set(BROWSER_OFFERS) | set(REMOTE) | {"pjsip_two_audio_offer.sdp"} == set(files)


@pytest.mark.parametrize("name", sorted(BROWSER_OFFERS))
def test_browser_offer_to_sip(name: str) -> None:
    expected_codecs, expected_events, direction = BROWSER_OFFERS[name]
    offer = browser_offer_to_sip(
        load(name), address=ADDRESS, port=PORT, session_id=42, session_version=3
    )
    assert names(offer.codecs) == expected_codecs
    assert [c.payload_type for c in offer.telephone_events] == expected_events
    lines = audio_lines(offer.sdp)
    assert offer.sdp.endswith("\r\n") and "\n" not in offer.sdp.replace("\r\n", "")
    assert lines[:5] == [
        "v=0",
        f"o=sipgw 42 3 IN IP4 {ADDRESS}",
        "s=sipgw",
        f"c=IN IP4 {ADDRESS}",
        "t=0 0",
    ]
    pts = [c.split("/")[1] for c in expected_codecs] + [str(pt) for pt in expected_events]
    assert lines[5] == f"m=audio {PORT} RTP/AVP {' '.join(pts)}"
    assert [line for line in lines if line.startswith("m=")] == [lines[5]]
    for bad in WEBRTC_ONLY:
        assert not [line for line in lines if line.startswith(bad)], bad
    assert "a=ptime:20" in lines
    assert f"a={direction}" in lines
    # Opus keeps its fmtp, telephone-event keeps its (if any); nothing else has one.
    fmtp_pts = {int(line.split(":")[1].split()[0]) for line in lines if line.startswith("a=fmtp")}
    allowed = {c.payload_type for c in offer.codecs if c.name == "opus"} | set(expected_events)
    assert fmtp_pts <= allowed
    assert "a=fmtp:111 minptime=10;useinbandfec=1" in lines or "opus/111" not in expected_codecs
    # Our own parser reads back exactly what was offered.
    back = parse_remote(offer.sdp)
    assert (back.address, back.port, back.direction, back.ptime) == (ADDRESS, PORT, direction, 20)
    assert back.codecs == offer.codecs
    assert back.telephone_events == offer.telephone_events


def test_browser_offer_codec_filter_keeps_browser_order() -> None:
    offer = browser_offer_to_sip(
        load("chrome_offer.sdp"), address=ADDRESS, port=PORT, codecs=("pcma", "PCMU")
    )
    assert names(offer.codecs) == ["PCMU/0", "PCMA/8"]
    assert "opus" not in offer.sdp and "G722" not in offer.sdp


def test_browser_offer_ipv6_address_and_random_session_id() -> None:
    one = browser_offer_to_sip(load("firefox_offer.sdp"), address="2001:db8::5", port=5004)
    two = browser_offer_to_sip(load("firefox_offer.sdp"), address="2001:db8::5", port=5004)
    assert "c=IN IP6 2001:db8::5\r\n" in one.sdp
    assert one.sdp.split("\r\n")[1].endswith(" 0 IN IP6 2001:db8::5")
    assert one.sdp.split("\r\n")[1] != two.sdp.split("\r\n")[1]


def test_browser_offer_without_supported_codec() -> None:
    with pytest.raises(SdpNegotiationError, match=r"no supported codec.*G729/8000"):
        browser_offer_to_sip(load("malformed/no_common_codec.sdp"), address=ADDRESS, port=PORT)
    with pytest.raises(SdpNegotiationError, match="no supported codec"):
        browser_offer_to_sip(load("chrome_offer.sdp"), address=ADDRESS, port=PORT, codecs=())


def test_browser_offer_bad_arguments() -> None:
    with pytest.raises(ValueError, match="port"):
        browser_offer_to_sip(load("chrome_offer.sdp"), address=ADDRESS, port=0)
    with pytest.raises(ValueError, match="address"):
        browser_offer_to_sip(load("chrome_offer.sdp"), address="", port=PORT)


@pytest.mark.parametrize("name", sorted(REMOTE))
def test_parse_remote(name: str) -> None:
    address, port, codecs, events, direction, ptime = REMOTE[name]
    remote = parse_remote(load(name))
    assert remote.address == address
    assert remote.port == port
    assert names(remote.codecs) == codecs
    assert remote.codec == remote.codecs[0]
    assert [c.payload_type for c in remote.telephone_events] == events
    assert remote.direction == direction
    assert remote.ptime == ptime


def test_parse_remote_static_payloads_without_rtpmap() -> None:
    # rtpengine's test answer lists "9" with no rtpmap: RFC 3551 static G.722.
    codec = parse_remote(load("rtpengine_answer_media_c.sdp")).codec
    assert codec == Codec("G722", 8000, 1, 9)
    assert codec.sample_rate == 16000


def test_parse_remote_codec_details() -> None:
    remote = parse_remote(load("baresip_answer.sdp"))
    assert remote.codecs[0] == Codec("opus", 48000, 2, 111, "stereo=1;sprop-stereo=1")
    assert remote.codecs[0].sample_rate == 48000
    assert remote.telephone_events == (Codec("telephone-event", 8000, 1, 126, "0-15"),)


def test_parse_remote_codec_filter() -> None:
    remote = parse_remote(load("baresip_answer.sdp"), codecs=("PCMA", "pcmu"))
    assert names(remote.codecs) == ["PCMU/0", "PCMA/8"]


def test_parse_remote_first_audio_line_decides() -> None:
    # pjsip's test: the first audio m= line only has payload 80, which nobody knows.
    with pytest.raises(SdpNegotiationError, match="no supported codec"):
        parse_remote(load("pjsip_two_audio_offer.sdp"))


def test_telephone_event_for() -> None:
    chrome = parse_remote(load("chrome_offer.sdp"))
    opus, g722 = chrome.codecs[0], chrome.codecs[1]
    assert chrome.telephone_event_for(opus) == Codec("telephone-event", 48000, 1, 110)
    assert chrome.telephone_event_for(g722) == Codec("telephone-event", 8000, 1, 126)
    sipp = parse_remote(load("sipp_uas_answer.sdp"))
    assert sipp.telephone_event_for(sipp.codec) is None
    safari = parse_remote(load("safari_offer.sdp"))
    wideband = Codec("X", 16000, 1, 99)
    assert safari.telephone_event_for(wideband) == Codec("telephone-event", 16000, 1, 113)


def chrome_sip_offer(codecs: tuple[str, ...] = SUPPORTED_CODECS) -> SipOffer:
    return browser_offer_to_sip(load("chrome_offer.sdp"), address=ADDRESS, port=PORT, codecs=codecs)


def test_answer_codec_uses_answer_order_and_payload_type() -> None:
    offer = chrome_sip_offer()
    assert answer_codec(parse_remote(load("sipp_uas_answer.sdp")), offer) == Codec(
        "PCMU", 8000, 1, 0
    )
    # The Cisco SDP carries opus on 114 where we offered 111: the answer's number wins.
    assert answer_codec(parse_remote(load("cisco_cucm_offer.sdp")), offer).payload_type == 114
    assert answer_codec(parse_remote(load("baresip_offer.sdp")), offer).name == "PCMU"


def test_answer_codec_none_in_common() -> None:
    offer = chrome_sip_offer(codecs=("PCMA",))
    with pytest.raises(SdpNegotiationError, match=r"answered: PCMU/8000; offered: PCMA/8000"):
        answer_codec(parse_remote(load("sipp_uas_answer.sdp")), offer)


def test_browser_codec_for() -> None:
    chrome = load("chrome_offer.sdp")
    assert browser_codec_for(chrome, Codec("PCMU", 8000, 1, 0)) == Codec("PCMU", 8000, 1, 0)
    assert browser_codec_for(chrome, Codec("PCMA", 8000, 1, 8)).payload_type == 8
    opus = browser_codec_for(chrome, Codec("opus", 48000, 2, 114))
    assert (opus.name, opus.payload_type) == ("opus", 111)
    # Not offered by the browser: its favourite codec, to transcode from.
    firefox = load("firefox_offer.sdp")
    assert browser_codec_for(firefox, Codec("G729", 8000, 1, 18)).payload_type == 109
    with pytest.raises(SdpNegotiationError, match="no supported codec"):
        browser_codec_for(load("malformed/no_common_codec.sdp"), Codec("PCMU", 8000, 1, 0))


def _normalised(sdp: str) -> list[str]:
    return sorted(line.rstrip() for line in sdp.splitlines() if line.strip())


@pytest.mark.parametrize("name", sorted(BROWSER_OFFERS))
def test_restrict_offer(name: str) -> None:
    original = load(name)
    _, events, _ = BROWSER_OFFERS[name]
    for keep in parse_remote(original).codecs:
        restricted = restrict_offer(original, keep)
        parsed = sdp_transform.parse(restricted)
        audio = next(m for m in parsed["media"] if m["type"] == "audio")
        formats = [int(pt) for pt in str(audio["payloads"]).split()]
        assert formats == [keep.payload_type, *events]
        assert {r["payload"] for r in audio["rtp"]} <= set(formats)
        assert {f["payload"] for f in audio["fmtp"]} <= set(formats)
        assert {f["payload"] for f in audio.get("rtcpFb", [])} <= {*formats, "*"}
        # Everything else is left as it was: same lines, apart from the removed formats'.
        removed = {
            int(pt) for pt in str(sdp_transform.parse(original)["media"][0]["payloads"]).split()
        } - set(formats)
        dropped = tuple(
            f"a={kind}:{pt} " for kind in ("rtpmap", "fmtp", "rtcp-fb") for pt in removed
        )
        expected = [
            line
            for line in _normalised(original)
            if not line.startswith(dropped) and not line.startswith("m=audio")
        ]
        got = [line for line in _normalised(restricted) if not line.startswith("m=audio")]
        assert got == expected
        remote = parse_remote(restricted)
        assert remote.codecs == (keep,)


def test_restrict_offer_unknown_payload() -> None:
    with pytest.raises(SdpNegotiationError, match="payload type 18"):
        restrict_offer(load("chrome_offer.sdp"), Codec("G729", 8000, 1, 18))


@pytest.mark.parametrize(
    ("name", "mirrored"),
    [
        ("sipp_uac_offer.sdp", "sendrecv"),
        ("twilio_siprec_offer.sdp", "recvonly"),
        ("baresip_answer.sdp", "sendonly"),
        ("baresip_answer_inactive.sdp", "inactive"),
    ],
)
def test_build_answer_mirrors_direction(name: str, mirrored: str) -> None:
    remote = parse_remote(load(name))
    answer = build_answer(
        remote,
        address=ADDRESS,
        port=PORT,
        codec=remote.codec,
        telephone_event=remote.telephone_event_for(remote.codec),
        session_id=7,
    )
    back = parse_remote(answer)
    assert back.direction == mirrored
    assert (back.address, back.port, names(back.codecs), back.ptime) == (
        ADDRESS,
        PORT,
        names((remote.codec,)),
        20,
    )
    forced = build_answer(
        remote,
        address=ADDRESS,
        port=PORT,
        codec=remote.codec,
        telephone_event=None,
        direction="inactive",
    )
    assert parse_remote(forced).direction == "inactive"


def test_build_answer_keeps_m_line_count_and_rejects_the_rest() -> None:
    remote = parse_remote(load("cisco_cucm_offer.sdp"))
    te = remote.telephone_event_for(remote.codec)
    answer = build_answer(
        remote, address=ADDRESS, port=PORT, codec=remote.codec, telephone_event=te, session_id=9
    )
    lines = audio_lines(answer)
    assert [line for line in lines if line.startswith("m=")] == [
        f"m=audio {PORT} RTP/AVP 114 101",
        "m=video 0 RTP/AVP 99",
        "m=application 0 RTP/AVP 100",
    ]
    assert "a=rtpmap:114 opus/48000/2" in lines
    assert "a=rtpmap:101 telephone-event/8000" in lines
    assert "a=fmtp:101 0-16" in lines
    assert lines[1] == f"o=sipgw 9 0 IN IP4 {ADDRESS}"
    # Two audio streams (Twilio SIPREC): the second one is refused, in its place.
    siprec = parse_remote(load("twilio_siprec_offer.sdp"))
    answer = build_answer(
        siprec, address=ADDRESS, port=PORT, codec=siprec.codecs[1], telephone_event=None
    )
    assert [line for line in audio_lines(answer) if line.startswith("m=")] == [
        f"m=audio {PORT} RTP/AVP 8",
        "m=audio 0 RTP/AVP 0",
    ]
    assert "telephone-event" not in answer


def test_build_answer_single_m_line_and_ipv6() -> None:
    remote = parse_remote(load("sipp_uas_answer_ipv6.sdp"))
    answer = build_answer(
        remote, address="::1", port=PORT, codec=remote.codec, telephone_event=None
    )
    assert "c=IN IP6 ::1\r\n" in answer
    assert len([line for line in audio_lines(answer) if line.startswith("m=")]) == 1


def test_supported_codecs_constant() -> None:
    assert SUPPORTED_CODECS == ("opus", "G722", "PCMU", "PCMA")
