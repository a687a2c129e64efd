"""The sipp scenarios of tests/sipp/ against sipp callers of tests/sipp/selftest/.

Each UAS scenario (the far party the gateway will call) is driven by a small hand-written
sipp UAC, without the gateway: both must exit 0, and the trace shows the message that the
scenario exists for. This proves the scenarios themselves before gateway tests rely on them.
"""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import Mapping, Sequence

import pytest

from tests.support.sipp import (
    SCENARIO_DIR,
    SippError,
    SippUac,
    SippUas,
    Transport,
    digest_valid,
    scenario_defaults,
    scenario_path,
    sipp_available,
)

pytestmark = [
    pytest.mark.sipp,
    pytest.mark.timeout(30),
    pytest.mark.skipif(not sipp_available(), reason="sipp not installed (Debian sip-tester)"),
]

WAIT = 10.0


async def run_pair(
    uas_scenario: str,
    uac_scenario: str,
    *,
    uas_keys: Mapping[str, str] | None = None,
    uac_keys: Mapping[str, str] | None = None,
    uac_args: Sequence[str] = (),
    username: str | None = None,
    password: str | None = None,
    transport: Transport = "u1",
) -> tuple[SippUas, SippUac, int, int]:
    """Run one call from a self-test UAC to a UAS scenario; return both and their exit codes."""
    async with SippUas(uas_scenario, keys=uas_keys, transport=transport, timeout=15) as uas:
        async with SippUac(
            uac_scenario,
            f"{uas.host}:{uas.port}",
            keys=uac_keys,
            extra_args=uac_args,
            username=username,
            password=password,
            transport=transport,
            timeout=15,
        ) as uac:
            uac_code = await uac.wait(timeout=WAIT)
        uas_code = await uas.wait(timeout=WAIT)
    return uas, uac, uas_code, uac_code


def assert_ok(uas: SippUas, uac: SippUac, uas_code: int, uac_code: int) -> None:
    assert (uas_code, uac_code) == (0, 0), f"{uas.summary()}\n---\n{uac.summary()}"


def sdp_of(message: str) -> str:
    return message.partition("\r\n\r\n")[2] or message.partition("\n\n")[2]


async def test_answer_wait_bye_answers_pcmu_and_echoes_rtp() -> None:
    async with SippUas("uas_answer_wait_bye", timeout=15) as uas:
        # -rtp_echo sends back whatever reaches the media port, call or not.
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rtp:
            rtp.bind(("127.0.0.1", 0))
            rtp.setblocking(False)
            packet = bytes([0x80, 0x00, 0x00, 0x01]) + bytes(8) + b"\xff" * 160
            rtp.sendto(packet, ("127.0.0.1", uas.media_port))
            echoed = await asyncio.wait_for(loop.sock_recv(rtp, 2048), WAIT)
        assert echoed == packet
        async with SippUac("uac_call_bye", f"{uas.host}:{uas.port}", timeout=15) as uac:
            uac_code = await uac.wait(timeout=WAIT)
        uas_code = await uas.wait(timeout=WAIT)
    assert_ok(uas, uac, uas_code, uac_code)
    [answer] = [m for m in uas.sent("SIP/2.0 200 OK") if "INVITE" in _header(m, "CSeq")]
    body = sdp_of(answer)
    assert f"m=audio {uas.media_port} RTP/AVP 0 101" in body
    assert "a=rtpmap:101 telephone-event/8000" in body
    assert len(uas.received("BYE ")) == 1


async def test_answer_send_bye_sends_in_dialog_bye() -> None:
    uas, uac, uas_code, uac_code = await run_pair(
        "uas_answer_send_bye", "uac_call_wait_bye", uas_keys={"bye_after": "200"}
    )
    assert_ok(uas, uac, uas_code, uac_code)
    [bye] = uac.received("BYE ")
    invite = uas.received("INVITE ")[0]
    # Request-URI is the caller's Contact; From/To are the INVITE's swapped, tags kept.
    assert bye.startswith(f"BYE sip:caller@127.0.0.1:{uac.port};transport=UDP SIP/2.0")
    caller_from = _header(invite, "From")
    assert _header(bye, "To") == caller_from
    assert _header(bye, "From").startswith(_header(invite, "To") + ";tag=")
    assert "BYE" in _header(bye, "CSeq")


async def test_answer_send_bye_honours_record_route() -> None:
    # A caller whose INVITE carries Record-Route (as through a proxy) must get a BYE with
    # the same route set, in order.
    uas, uac, uas_code, uac_code = await run_pair(
        "uas_answer_send_bye",
        "uac_call_wait_bye",
        uas_keys={"bye_after": "200"},
        uac_keys={"record_route": "Record-Route: <sip:p1.test;lr>, <sip:p2.test;lr>"},
    )
    assert_ok(uas, uac, uas_code, uac_code)
    [ringing] = uas.sent("SIP/2.0 180")
    assert "Record-Route: <sip:p1.test;lr>, <sip:p2.test;lr>" in ringing
    [bye] = uac.received("BYE ")
    assert _header(bye, "Route") == "<sip:p1.test;lr>, <sip:p2.test;lr>"


async def test_busy_sends_486_and_takes_the_ack() -> None:
    uas, uac, uas_code, uac_code = await run_pair("uas_busy", "uac_busy")
    assert_ok(uas, uac, uas_code, uac_code)
    assert len(uas.sent("SIP/2.0 486 Busy Here")) >= 1
    assert len(uas.received("ACK ")) == 1


async def test_ring_forever_answers_cancel_with_200_and_487() -> None:
    uas, uac, uas_code, uac_code = await run_pair("uas_ring_forever", "uac_cancel")
    assert_ok(uas, uac, uas_code, uac_code)
    assert len(uas.received("CANCEL ")) == 1
    [terminated] = uas.sent("SIP/2.0 487")
    assert _header(terminated, "CSeq") == "1 INVITE"
    assert _header(terminated, "Via") == _header(uas.received("INVITE ")[0], "Via")


async def test_silent_never_answers_and_ends_by_itself() -> None:
    uas, uac, uas_code, uac_code = await run_pair(
        "uas_silent", "uac_no_answer", uas_keys={"hold_ms": "2000"}
    )
    assert_ok(uas, uac, uas_code, uac_code)
    assert uas.sent("") == []
    # The caller retransmitted (200, 400, 800 ms) and sipp stayed silent.
    assert len(uac.sent("INVITE ")) >= 3


async def test_retransmit_200_needs_an_ack_for_each() -> None:
    uas, uac, uas_code, uac_code = await run_pair("uas_retransmit_200", "uac_ack_every_200")
    assert_ok(uas, uac, uas_code, uac_code)
    oks = [m for m in uas.sent("SIP/2.0 200 OK") if "INVITE" in _header(m, "CSeq")]
    assert len(oks) == 3 and len(set(oks)) == 1, oks
    assert len(uas.received("ACK ")) == 3


@pytest.mark.parametrize("scenario", ["uas_bad_sdp", "uas_no_common_codec"])
async def test_unusable_answers_are_acked_then_byed(scenario: str) -> None:
    uas, uac, uas_code, uac_code = await run_pair(scenario, "uac_call_bye")
    assert_ok(uas, uac, uas_code, uac_code)
    [answer] = [m for m in uac.received("SIP/2.0 200 OK") if "INVITE" in _header(m, "CSeq")]
    assert _header(answer, "Content-Type") == "application/sdp"
    expected = "this is not sdp" if scenario == "uas_bad_sdp" else "m=audio"
    assert expected in sdp_of(answer)
    if scenario == "uas_no_common_codec":
        assert "RTP/AVP 18\r\n" in sdp_of(answer) and "PCMU" not in sdp_of(answer)
    assert len(uas.received("BYE ")) == 1


@pytest.mark.parametrize(
    ("scenario", "challenge", "credentials"),
    [
        ("uas_auth", "401", "Authorization"),
        ("uas_proxy_auth", "407", "Proxy-Authorization"),
    ],
)
async def test_auth_accepts_right_credentials(
    scenario: str, challenge: str, credentials: str
) -> None:
    uas, uac, uas_code, uac_code = await run_pair(
        scenario, "uac_auth", username="alice", password="secret"
    )
    assert_ok(uas, uac, uas_code, uac_code)
    [challenge_msg] = uas.sent(f"SIP/2.0 {challenge}")
    assert 'realm="sipgw.test"' in challenge_msg and 'qop="auth"' in challenge_msg
    retry = uas.received("INVITE ")[-1]
    assert digest_valid(retry, credentials, username="alice", password="secret")
    assert not digest_valid(retry, credentials, username="alice", password="wrong")
    assert len(uas.received("BYE ")) == 1


@pytest.mark.parametrize("scenario", ["uas_auth", "uas_proxy_auth"])
async def test_auth_refuses_wrong_credentials(scenario: str) -> None:
    # uas_proxy_auth cannot check the password (see its comment), only the user name.
    password, user = ("wrong", "alice") if scenario == "uas_auth" else ("secret", "mallory")
    uas, uac, uas_code, uac_code = await run_pair(
        scenario, "uac_auth", username=user, password=password
    )
    assert (uas_code, uac_code) == (1, 0), f"{uas.summary()}\n---\n{uac.summary()}"
    assert len(uas.sent("SIP/2.0 403 Forbidden")) >= 1
    assert uas.sent("SIP/2.0 200 OK") == []


async def test_uac_options_gets_200() -> None:
    uas, uac, uas_code, uac_code = await run_pair("uas_options_responder", "uac_options")
    assert_ok(uas, uac, uas_code, uac_code)
    [options] = uas.received("OPTIONS ")
    assert options.startswith(f"OPTIONS sip:service@127.0.0.1:{uas.port} SIP/2.0")


async def test_many_calls_without_message_trace() -> None:
    calls = 20
    async with SippUas(
        "uas_answer_wait_bye", max_calls=calls, trace_messages=False, timeout=15
    ) as uas:
        async with SippUac(
            "uac_call_bye",
            f"{uas.host}:{uas.port}",
            calls=calls,
            rate=100,
            keys={"hold_ms": "100"},
            trace_messages=False,
            timeout=15,
        ) as uac:
            uac_code = await uac.wait(timeout=WAIT)
        uas_code = await uas.wait(timeout=WAIT)
    assert_ok(uas, uac, uas_code, uac_code)
    assert uas.messages() == ""
    # The final screen: "Successful call | <periodic> | <cumulative>".
    assert re.search(rf"Successful call\s*\|\s*\d+\s*\|\s*{calls}\s", uas.screen()), uas.screen()


async def test_tcp_transport() -> None:
    uas, uac, uas_code, uac_code = await run_pair(
        "uas_answer_wait_bye", "uac_call_bye", transport="t1"
    )
    assert_ok(uas, uac, uas_code, uac_code)
    assert uas.uri.endswith(";transport=tcp")
    assert "SIP/2.0/TCP" in uas.received("INVITE ")[0]


async def test_global_timeout_fails_and_stop_kills() -> None:
    # Nobody calls: sipp's own -timeout ends it, as a fatal error.
    async with SippUas("uas_answer_wait_bye", timeout=1) as uas:
        assert uas.running
        code = await uas.wait(timeout=WAIT)
    assert code == 255, uas.summary()
    assert "timed out after" in uas.errors()
    # Leaving the context stops a sipp still running.
    async with SippUas("uas_ring_forever", timeout=20) as uas:
        pass
    assert not uas.running and uas.returncode is not None


async def test_missing_scenario_is_an_error() -> None:
    with pytest.raises(SippError):
        SippUas("no_such_scenario")


def test_every_scenario_declares_what_it_needs() -> None:
    keys, args = scenario_defaults(scenario_path("uas_retransmit_200"))
    assert args == ["-nr"] and keys == {"retransmit_gap": "250"}
    for path in sorted(SCENARIO_DIR.glob("*.xml")):
        head = path.read_text(encoding="latin-1").split("<scenario", 1)[0]
        assert "<!--" in head and path.stem in head, f"{path.name} lacks its header comment"


def test_digest_valid_rfc2617_example() -> None:
    # RFC 2617 section 3.5's example (an HTTP request, same computation).
    request = (
        "GET /dir/index.html HTTP/1.1\r\n"
        'Authorization: Digest username="Mufasa", realm="testrealm@host.com", '
        'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", uri="/dir/index.html", qop=auth, '
        'nc=00000001, cnonce="0a4f113b", response="6629fae49393a05397450978507c4ef1", '
        'opaque="5ccc069c403ebaf9f0171e9517f40e41"\r\n\r\n'
    )
    assert digest_valid(request, "Authorization", username="Mufasa", password="Circle Of Life")
    assert not digest_valid(request, "Authorization", username="Mufasa", password="x")
    assert not digest_valid(request, "Proxy-Authorization", username="Mufasa", password="x")


def _header(message: str, name: str) -> str:
    for line in message.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() == name.lower():
            return value.strip()
    return ""
