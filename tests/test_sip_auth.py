"""Tests for gateway.sip.auth: published vectors, challenge choice, client/server agreement."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import sipmessage

from gateway.sip.auth import (
    AuthError,
    Credentials,
    DigestClient,
    DigestServer,
    RealmMismatch,
    UnsupportedChallenge,
    compute_response,
    parse_auth_header,
)

URI = "sip:alice@example.com"


def make_request(method: str = "REGISTER", uri: str = URI, body: bytes = b"") -> sipmessage.Request:
    req = sipmessage.Request(method, sipmessage.URI.parse(uri), body=body)
    req.headers.add("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1;rport")
    req.headers.add("Max-Forwards", "70")
    req.headers.add("From", "<sip:alice@example.com>;tag=abc")
    req.headers.add("To", "<sip:alice@example.com>")
    req.headers.add("Call-ID", "call-1@127.0.0.1")
    req.headers.add("CSeq", f"1 {method}")
    req.headers.add("Contact", "<sip:alice@127.0.0.1:5070>")
    if body:
        req.headers.add("Content-Type", "application/sdp")
    req.headers.add("Content-Length", str(len(body)))
    return req


def challenge_response(*challenges: str, code: int = 401) -> sipmessage.Response:
    resp = sipmessage.Response(code, "Unauthorized" if code == 401 else "Proxy Auth Required")
    header = "WWW-Authenticate" if code == 401 else "Proxy-Authenticate"
    for value in challenges:
        resp.headers.add(header, value)
    return resp


def params_of(value: str) -> sipmessage.AuthParameters:
    (parsed,) = parse_auth_header(value)
    assert parsed.scheme == "Digest"
    return parsed.parameters


def answer(request: sipmessage.Request, header: str = "Authorization") -> sipmessage.AuthParameters:
    values = request.headers.getlist(header)
    assert len(values) == 1, values
    return params_of(values[0])


def expected_response(
    p: sipmessage.AuthParameters, request: sipmessage.Request, password: str
) -> str:
    return compute_response(
        algorithm=p.get("algorithm", "MD5"),
        username=p["username"],
        realm=p["realm"],
        password=password,
        method=request.method,
        uri=p["uri"],
        nonce=p["nonce"],
        qop=p.get("qop"),
        nc=p.get("nc"),
        cnonce=p.get("cnonce"),
        body=request.body,
    )


# --- published vectors ----------------------------------------------------------------------


def test_rfc2617_section_3_5_example() -> None:
    assert (
        compute_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


def test_rfc2069_form_without_qop() -> None:
    # Same inputs without qop; the value other implementations test against.
    assert (
        compute_response(
            algorithm="MD5",
            username="Mufasa",
            realm="testrealm@host.com",
            password="Circle Of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop=None,
            nc=None,
            cnonce=None,
        )
        == "670fd8c2df070c60b045671b8b24ff02"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ],
)
def test_rfc7616_section_3_9_1_examples(algorithm: str, expected: str) -> None:
    # RFC 7616 spells the password "Circle of Life" (RFC 2617: "Circle Of Life").
    assert (
        compute_response(
            algorithm=algorithm,
            username="Mufasa",
            realm="http-auth@example.org",
            password="Circle of Life",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        )
        == expected
    )


def test_sess_algorithm_hashes_nonce_and_cnonce_into_a1() -> None:
    def response(algorithm: str, cnonce: str) -> str:
        return compute_response(
            algorithm=algorithm,
            username="u",
            realm="r",
            password="p",
            method="INVITE",
            uri=URI,
            nonce="n",
            qop="auth",
            nc="00000001",
            cnonce=cnonce,
        )

    # With plain MD5 the cnonce only enters the final hash; with -sess it also enters A1.
    assert len({response("MD5-sess", "c1"), response("MD5-sess", "c2"), response("MD5", "c1")}) == 3
    assert len(response("SHA-256-sess", "c1")) == 64
    assert response("md5-SESS", "c1") == response("MD5-sess", "c1")


def test_compute_response_rejects_unknown_algorithm_with_auth_error() -> None:
    with pytest.raises(UnsupportedChallenge):
        compute_response(
            algorithm="SHA-1",
            username="u",
            realm="r",
            password="p",
            method="INVITE",
            uri=URI,
            nonce="n",
            qop=None,
            nc=None,
            cnonce=None,
        )


# --- parsing ----------------------------------------------------------------------------------


def test_parser_handles_what_sipmessage_cannot() -> None:
    value = 'Digest realm="a, b", nonce="x\\"y", qop="auth,auth-int", algorithm=MD5'
    with pytest.raises(ValueError):
        sipmessage.AuthChallenge.parse(value)  # the sipmessage 0.7 limitation we work around
    p = params_of(value)
    assert dict(p) == {"realm": "a, b", "nonce": 'x"y', "qop": "auth,auth-int", "algorithm": "MD5"}


def test_parser_splits_several_challenges_in_one_value() -> None:
    parsed = parse_auth_header(
        'Digest realm="r", nonce="1", algorithm=SHA-256, Digest REALM="r", Nonce="2"'
    )
    assert [(c.scheme, dict(c.parameters)) for c in parsed] == [
        ("Digest", {"realm": "r", "nonce": "1", "algorithm": "SHA-256"}),
        ("Digest", {"realm": "r", "nonce": "2"}),
    ]


# --- client ---------------------------------------------------------------------------------


def test_answer_to_401_is_a_copy_with_authorization_and_nothing_else_changed() -> None:
    request = make_request("INVITE", body=b"v=0\r\n")
    response = challenge_response(
        'Digest realm="example.com", nonce="abc123", qop="auth", opaque="op/aque", algorithm=MD5'
    )
    authorized = DigestClient(Credentials("alice", "secret")).authorize(request, response)

    assert authorized is not request
    assert request.headers.get("Authorization") is None  # the original is untouched
    assert (authorized.method, str(authorized.uri), authorized.body) == ("INVITE", URI, b"v=0\r\n")
    for name in request.headers.keys():
        assert authorized.headers.getlist(name) == request.headers.getlist(name)
    assert authorized.headers.keys() == [*request.headers.keys(), "Authorization"]
    assert str(authorized.cseq) == "1 INVITE"
    assert authorized.headers.get("Via") == request.headers.get("Via")

    p = answer(authorized)
    assert p["username"] == "alice"
    assert p["realm"] == "example.com"
    assert p["nonce"] == "abc123"
    assert p["uri"] == URI
    assert p["qop"] == "auth"
    assert p["nc"] == "00000001"
    assert p["opaque"] == "op/aque"
    assert p["algorithm"] == "MD5"
    assert len(p["cnonce"]) >= 16
    assert p["response"] == expected_response(p, authorized, "secret")

    # The header lists are independent: editing the copy leaves the original alone.
    authorized.headers.set("Call-ID", "other")
    assert request.call_id == "call-1@127.0.0.1"


def test_header_syntax_tokens_unquoted_and_readable_by_sipmessage() -> None:
    request = make_request()
    response = challenge_response('Digest realm="example.com", nonce="n1", qop="auth"')
    authorized = DigestClient(Credentials("alice", "secret")).authorize(request, response)
    raw = authorized.headers.getlist("Authorization")[0]
    assert raw.startswith("Digest ")
    assert "qop=auth," in raw or raw.endswith("qop=auth")
    assert " nc=0000000" in raw
    assert f'uri="{URI}"' in raw
    creds = authorized.authorization  # sipmessage parses what we wrote
    assert creds is not None and creds.parameters is not None
    assert creds.parameters["response"] == answer(authorized)["response"]


def test_prefers_sha256_over_md5_whatever_the_order() -> None:
    md5 = 'Digest realm="example.com", nonce="n-md5", qop="auth", algorithm=MD5'
    sha = 'Digest realm="example.com", nonce="n-sha", qop="auth", algorithm=SHA-256'
    client = DigestClient(Credentials("alice", "secret"))
    for order in [(sha, md5), (md5, sha)]:
        request = make_request()
        authorized = client.authorize(request, challenge_response(*order))
        p = answer(authorized)
        assert (p["algorithm"], p["nonce"]) == ("SHA-256", "n-sha")
        assert len(p["response"]) == 64
        assert p["response"] == expected_response(p, authorized, "secret")


def test_skips_unsupported_challenges() -> None:
    response = challenge_response(
        'Digest realm="ims", nonce="aka", algorithm=AKAv1-MD5, qop="auth"',
        'Digest realm="example.com", nonce="n1", qop="auth-conf"',
        'Digest realm="example.com", nonce="n2"',
    )
    authorized = DigestClient(Credentials("alice", "secret")).authorize(make_request(), response)
    p = answer(authorized)
    assert p["nonce"] == "n2"
    assert p["response"] == expected_response(p, authorized, "secret")


def test_407_answered_with_proxy_authorization_keeping_other_realms() -> None:
    request = make_request("INVITE")
    # An earlier 401 from the far end left its Authorization on the request.
    request.headers.add("Authorization", 'Digest username="alice", realm="far.example"')
    request.headers.add("Proxy-Authorization", 'Digest username="alice", realm="other-proxy"')
    response = challenge_response('Digest realm="proxy.example", nonce="pn", qop="auth"', code=407)
    authorized = DigestClient(Credentials("alice", "secret")).authorize(request, response)

    assert authorized.headers.getlist("Authorization") == request.headers.getlist("Authorization")
    values = authorized.headers.getlist("Proxy-Authorization")
    assert len(values) == 2
    assert params_of(values[0])["realm"] == "other-proxy"
    p = params_of(values[1])
    assert (p["realm"], p["nonce"]) == ("proxy.example", "pn")
    assert p["response"] == expected_response(p, authorized, "secret")


def test_rechallenge_replaces_the_answer_for_the_same_realm() -> None:
    client = DigestClient(Credentials("alice", "secret"))
    first = client.authorize(
        make_request(), challenge_response('Digest realm="example.com", nonce="old", qop="auth"')
    )
    # stale=true: just answer the new nonce; the old credentials must not linger.
    second = client.authorize(
        first,
        challenge_response('Digest realm="example.com", nonce="new", qop="auth", stale=true'),
    )
    p = answer(second)
    assert (p["nonce"], p["nc"]) == ("new", "00000001")


def test_nonce_count_increments_when_the_same_nonce_is_reused() -> None:
    client = DigestClient(Credentials("alice", "secret"))
    response = challenge_response('Digest realm="example.com", nonce="same", qop="auth"')
    answers = [answer(client.authorize(make_request(), response)) for _ in range(3)]
    assert [p["nc"] for p in answers] == ["00000001", "00000002", "00000003"]
    assert len({p["cnonce"] for p in answers}) == 3  # a fresh cnonce each time
    assert len({p["response"] for p in answers}) == 3
    other = challenge_response('Digest realm="example.com", nonce="another", qop="auth"')
    assert answer(client.authorize(make_request(), other))["nc"] == "00000001"
    assert answer(client.authorize(make_request(), response))["nc"] == "00000004"


def test_challenge_without_qop_gets_rfc2069_answer() -> None:
    request = make_request()
    response = challenge_response('Digest realm="example.com", nonce="n1"')
    authorized = DigestClient(Credentials("alice", "secret")).authorize(request, response)
    p = answer(authorized)
    assert set(p) == {"username", "realm", "nonce", "uri", "response"}
    assert p["response"] == compute_response(
        algorithm="MD5",
        username="alice",
        realm="example.com",
        password="secret",
        method="REGISTER",
        uri=URI,
        nonce="n1",
        qop=None,
        nc=None,
        cnonce=None,
    )


def test_auth_int_hashes_the_body_and_auth_is_preferred_when_offered() -> None:
    body = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n"
    client = DigestClient(Credentials("alice", "secret"))
    request = make_request("INVITE", body=body)

    only_int = challenge_response('Digest realm="example.com", nonce="n1", qop="auth-int"')
    authorized = client.authorize(request, only_int)
    p = answer(authorized)
    assert p["qop"] == "auth-int"
    assert p["response"] == expected_response(p, authorized, "secret")
    assert p["response"] != compute_response(
        algorithm="MD5",
        username="alice",
        realm="example.com",
        password="secret",
        method="INVITE",
        uri=URI,
        nonce="n1",
        qop="auth-int",
        nc=p["nc"],
        cnonce=p["cnonce"],
        body=b"other body",  # the body is part of the hash
    )

    both = challenge_response('Digest realm="example.com", nonce="n2", qop="auth-int, auth"')
    assert answer(client.authorize(request, both))["qop"] == "auth"


def test_realm_restriction() -> None:
    client = DigestClient(Credentials("alice", "secret", realm="mine.example"))
    with pytest.raises(RealmMismatch) as info:
        client.authorize(
            make_request(), challenge_response('Digest realm="theirs.example", nonce="n"')
        )
    assert info.value.realms == ("theirs.example",)
    assert "theirs.example" in str(info.value)

    # With a choice, the restricted realm is answered even if another is stronger.
    response = challenge_response(
        'Digest realm="theirs.example", nonce="a", algorithm=SHA-256',
        'Digest realm="mine.example", nonce="b", algorithm=MD5',
    )
    assert answer(client.authorize(make_request(), response))["realm"] == "mine.example"


@pytest.mark.parametrize(
    "value",
    [
        'Digest realm="example.com", nonce="n", algorithm=SHA-1',
        'Digest realm="ims", nonce="n", algorithm=AKAv1-MD5',
        'Basic realm="example.com"',
        'Digest realm="example.com", nonce="n", qop="auth-conf"',
        'Digest realm="example.com", nonce="n", algorithm=MD5-sess',  # -sess needs qop
    ],
)
def test_unsupported_challenge(value: str) -> None:
    with pytest.raises(UnsupportedChallenge) as info:
        DigestClient(Credentials("alice", "secret")).authorize(
            make_request(), challenge_response(value)
        )
    assert info.value.challenge == value


@pytest.mark.parametrize(
    "value",
    [
        "",
        "Digest",
        "Digest realm",
        'Digest realm="unterminated, nonce="n"',
        'Digest realm="r" nonce="n"',
        'Digest nonce="only-a-nonce"',
        'Digest realm="r", realm="r2", nonce="n"',
        ",,,",
        '"Digest" realm="r"',
        'Digest realm="r", nonce="n\r\nVia: SIP/2.0/UDP evil"',  # would be echoed as a header
    ],
)
def test_malformed_challenge_raises_auth_error(value: str) -> None:
    with pytest.raises(AuthError) as info:
        DigestClient(Credentials("alice", "secret")).authorize(
            make_request(), challenge_response(value)
        )
    assert not isinstance(info.value, ValueError | KeyError)
    assert "malformed" in str(info.value)


def test_missing_header_and_wrong_status() -> None:
    client = DigestClient(Credentials("alice", "secret"))
    with pytest.raises(AuthError, match="no WWW-Authenticate"):
        client.authorize(make_request(), challenge_response())
    # A 407 answer is looked for in Proxy-Authenticate only.
    resp = challenge_response(code=407)
    resp.headers.add("WWW-Authenticate", 'Digest realm="r", nonce="n"')
    with pytest.raises(AuthError, match="no Proxy-Authenticate"):
        client.authorize(make_request(), resp)
    with pytest.raises(AuthError, match="not a 401 or 407"):
        client.authorize(make_request(), sipmessage.Response(403, "Forbidden"))


def test_credentials_repr_hides_password() -> None:
    assert "hunter2" not in repr(Credentials("alice", "hunter2"))


# --- client against server ----------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now


def server_challenge(server: DigestServer, code: int = 401) -> sipmessage.Response:
    return challenge_response(server.challenge(), code=code)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "SHA-512-256"])
def test_client_answers_server_challenge(algorithm: str) -> None:
    server = DigestServer("example.com", {"alice": "secret"}, algorithm)
    challenge = server.challenge()
    p = params_of(challenge)
    assert (p["realm"], p["qop"], p["algorithm"]) == ("example.com", "auth", algorithm)
    assert "stale" not in p
    assert params_of(server.challenge(stale=True))["stale"] == "true"
    assert params_of(server.challenge())["nonce"] != p["nonce"]

    client = DigestClient(Credentials("alice", "secret"))
    request = make_request("INVITE", body=b"v=0\r\n")
    authorized = client.authorize(request, challenge_response(challenge))
    assert server.verify(authorized) == "alice"
    assert server.verify(request) is None  # no credentials at all
    # Reusing the challenge (next request, nc=2) is accepted too.
    again = client.authorize(make_request("BYE"), challenge_response(challenge))
    assert answer(again)["nc"] == "00000002"
    assert server.verify(again) == "alice"


def test_proxy_authorization_verified_by_header_name() -> None:
    server = DigestServer("proxy.example", {"alice": "secret"})
    client = DigestClient(Credentials("alice", "secret"))
    authorized = client.authorize(make_request("INVITE"), server_challenge(server, code=407))
    assert server.verify(authorized, header="Proxy-Authorization") == "alice"
    assert server.verify(authorized) is None


def test_server_rejects_wrong_password_and_unknown_user() -> None:
    server = DigestServer("example.com", {"alice": "secret"})
    wrong = DigestClient(Credentials("alice", "guess"))
    assert server.verify(wrong.authorize(make_request(), server_challenge(server))) is None
    stranger = DigestClient(Credentials("mallory", "secret"))
    assert server.verify(stranger.authorize(make_request(), server_challenge(server))) is None


def test_server_rejects_tampered_nonce() -> None:
    server = DigestServer("example.com", {"alice": "secret"})
    p = params_of(server.challenge())
    nonce = p["nonce"]
    tampered = nonce[:-2] + ("AA" if nonce[-2:] != "AA" else "BB")
    # The client answers the tampered nonce correctly; only the server's HMAC can catch it.
    challenge = f'Digest realm="example.com", nonce="{tampered}", algorithm=MD5, qop="auth"'
    client = DigestClient(Credentials("alice", "secret"))
    assert server.verify(client.authorize(make_request(), challenge_response(challenge))) is None
    # A nonce from another server (another secret) is no better.
    other = DigestServer("example.com", {"alice": "secret"})
    assert server.verify(client.authorize(make_request(), server_challenge(other))) is None


def test_server_expires_nonces_and_reports_stale() -> None:
    clock = FakeClock()
    server = DigestServer("example.com", {"alice": "secret"}, nonce_max_age=60, clock=clock)
    client = DigestClient(Credentials("alice", "secret"))
    authorized = client.authorize(make_request(), server_challenge(server))
    clock.now += 59
    assert server.verify(authorized) == "alice"
    assert not server.is_stale(authorized)
    clock.now += 2
    assert server.verify(authorized) is None
    assert server.is_stale(authorized)
    wrong = DigestClient(Credentials("alice", "guess"))
    clock.now -= 61
    bad = wrong.authorize(make_request(), server_challenge(server))
    clock.now += 61
    assert not server.is_stale(bad)  # stale only when the rest was right


def test_server_rejects_request_changed_after_signing() -> None:
    server = DigestServer("example.com", {"alice": "secret"})
    client = DigestClient(Credentials("alice", "secret"))
    authorized = client.authorize(make_request(), server_challenge(server))

    other_method = sipmessage.Request("INVITE", authorized.uri)
    other_method.headers.add("Authorization", authorized.headers.getlist("Authorization")[0])
    assert server.verify(other_method) is None

    other_uri = sipmessage.Request("REGISTER", sipmessage.URI.parse("sip:bob@example.com"))
    other_uri.headers.add("Authorization", authorized.headers.getlist("Authorization")[0])
    assert server.verify(other_uri) is None


@pytest.mark.parametrize(
    "value",
    [
        "garbage",
        'Digest realm="example.com"',
        'Digest username="alice", realm="example.com", nonce="%%%", uri="sip:a@b", response="x"',
        'Digest username="alice", realm="example.com", nonce="n", uri="sip:x", response="r", '
        "qop=auth, nc=zz, cnonce=c",
        'Basic YWxpY2U6c2VjcmV0",',
    ],
)
def test_server_never_raises_on_bad_headers(value: str) -> None:
    server = DigestServer("example.com", {"alice": "secret"})
    request = make_request()
    request.headers.add("Authorization", value)
    assert server.verify(request) is None
    assert not server.is_stale(request)


def test_server_ignores_credentials_for_other_realms() -> None:
    server = DigestServer("example.com", {"alice": "secret"})
    elsewhere = DigestServer("elsewhere.example", {"alice": "secret"})
    client = DigestClient(Credentials("alice", "secret"))
    first = client.authorize(make_request(), server_challenge(elsewhere))
    assert server.verify(first) is None
    # Both realms answered on one request: each server finds its own.
    both = client.authorize(first, server_challenge(server))
    assert len(both.headers.getlist("Authorization")) == 2
    assert server.verify(both) == "alice"
    assert elsewhere.verify(both) == "alice"


def test_server_rejects_unknown_algorithm() -> None:
    with pytest.raises(UnsupportedChallenge):
        DigestServer("example.com", {}, algorithm="SHA-1")


# --- interop with sipp (Debian sip-tester 3.6.1: MD5 digest only) -------------------------------

SIPP = shutil.which("sipp")
needs_sipp = pytest.mark.skipif(SIPP is None, reason="sipp (Debian package sip-tester) not found")

SIPP_CHALLENGES = {
    "qop-auth": 'Digest realm="sipp.test", nonce="8f2a6c01d1e94b3b", opaque="sipp-opaque", '
    'qop="auth,auth-int", algorithm=MD5',
    "qop-auth-int": 'Digest realm="sipp.test", nonce="8f2a6c01d1e94b3c", qop="auth-int"',
    "rfc2069": 'Digest realm="sipp.test", nonce="8f2a6c01d1e94b3d"',
}
SIPP_UAS_VERIFYING = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="challenge and verify">
  <recv request="REGISTER"/>
  <send><![CDATA[
SIP/2.0 401 Unauthorized
[last_Via:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
WWW-Authenticate: @CHALLENGE@
Content-Length: 0

]]></send>
  <recv request="REGISTER">
    <action>
      <verifyauth assign_to="authvalid" username="alice" password="secret"/>
    </action>
  </recv>
  <nop test="authvalid" next="good"/>
  <send next="done"><![CDATA[
SIP/2.0 403 Forbidden
[last_Via:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="good"/>
  <send><![CDATA[
SIP/2.0 200 OK
[last_Via:]
[last_From:]
[last_To:];tag=[pid]-[call_number]
[last_Call-ID:]
[last_CSeq:]
Content-Length: 0

]]></send>
  <label id="done"/>
</scenario>
"""

SIPP_UAC_REGISTERING = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="register with digest">
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@sipp.test>;tag=[pid]-[call_number]
To: <sip:alice@sipp.test>
Call-ID: [call_id]
CSeq: 1 REGISTER
Contact: <sip:alice@[local_ip]:[local_port]>
Max-Forwards: 70
Expires: 60
Content-Length: 0

]]></send>
  <recv response="401" auth="true"/>
  <send retrans="500"><![CDATA[
REGISTER sip:[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: <sip:alice@sipp.test>;tag=[pid]-[call_number]
To: <sip:alice@sipp.test>
Call-ID: [call_id]
CSeq: 2 REGISTER
Contact: <sip:alice@[local_ip]:[local_port]>
[authentication]
Max-Forwards: 70
Expires: 60
Content-Length: 0

]]></send>
  <recv response="200"/>
</scenario>
"""


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def sipp_command(scenario: Path, port: int, *extra: str) -> list[str]:
    assert SIPP is not None
    # No `timeout` wrapper: the tests kill sipp itself if it outlives them.
    return [
        SIPP,
        "-sf",
        str(scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-cp",
        str(free_udp_port()),
        "-mp",
        str(free_udp_port()),
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "20",
        "-timeout_error",
        *extra,
    ]


def start_sipp(tmp_path: Path, cmd: list[str]) -> subprocess.Popen[bytes]:
    # Output to files, not pipes: nobody reads a pipe here, and sipp's errors stay inspectable.
    with open(tmp_path / "sipp.out", "wb") as out:
        return subprocess.Popen(
            [*cmd, "-trace_err", "-error_file", str(tmp_path / "sipp_errors.log")],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )


def receive(sock: socket.socket) -> sipmessage.Request | sipmessage.Response:
    data, _ = sock.recvfrom(65535)
    return sipmessage.Message.parse(data)


def register_via_sipp_uas(tmp_path: Path, password: str, challenge_value: str) -> int:
    """REGISTER to a sipp UAS that challenges, answer with DigestClient: the final code."""
    scenario = tmp_path / "uas.xml"
    scenario.write_text(SIPP_UAS_VERIFYING.replace("@CHALLENGE@", challenge_value))
    port = free_udp_port()
    sipp = start_sipp(tmp_path, sipp_command(scenario, port))
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("127.0.0.1", 0))
            sock.settimeout(0.2)
            local = sock.getsockname()[1]
            # A body, so that auth-int has something to protect.
            request = make_request(uri=f"sip:127.0.0.1:{port}", body=b"hello sipp\r\n")
            request.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-a1")
            request.headers.set("Contact", f"<sip:alice@127.0.0.1:{local}>")
            # sipp may not be listening yet: resend until it answers (UDP, like Timer E).
            deadline = time.monotonic() + 10
            challenge: sipmessage.Request | sipmessage.Response | None = None
            while challenge is None and time.monotonic() < deadline:
                sock.sendto(bytes(request), ("127.0.0.1", port))
                try:
                    challenge = receive(sock)
                except TimeoutError:
                    continue
            assert isinstance(challenge, sipmessage.Response), "no answer from sipp"
            assert challenge.code == 401

            authorized = DigestClient(Credentials("alice", password)).authorize(request, challenge)
            # The UA's business, not authorize()'s: a new CSeq and a new branch.
            authorized.headers.set("CSeq", "2 REGISTER")
            authorized.headers.set("Via", f"SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-a2")
            sock.settimeout(10)
            sock.sendto(bytes(authorized), ("127.0.0.1", port))
            final = receive(sock)
            assert isinstance(final, sipmessage.Response)
        assert sipp.wait(timeout=20) == 0  # the scenario ran to its end
    finally:
        if sipp.poll() is None:
            sipp.kill()
            sipp.wait()
    return final.code


@needs_sipp
@pytest.mark.sipp
@pytest.mark.parametrize("kind", sorted(SIPP_CHALLENGES))
def test_sipp_uas_accepts_digest_client_answer(tmp_path: Path, kind: str) -> None:
    assert register_via_sipp_uas(tmp_path, "secret", SIPP_CHALLENGES[kind]) == 200


@needs_sipp
@pytest.mark.sipp
@pytest.mark.parametrize("kind", sorted(SIPP_CHALLENGES))
def test_sipp_uas_rejects_wrong_password(tmp_path: Path, kind: str) -> None:
    # Proves the sipp scenario really checks, so the 200 above means something.
    assert register_via_sipp_uas(tmp_path, "wrong", SIPP_CHALLENGES[kind]) == 403


@needs_sipp
@pytest.mark.sipp
@pytest.mark.parametrize(("password", "expected"), [("secret", "alice"), ("wrong", None)])
def test_digest_server_verifies_sipp_uac(
    tmp_path: Path, password: str, expected: str | None
) -> None:
    server = DigestServer("sipp.test", {"alice": "secret"})
    scenario = tmp_path / "uac.xml"
    scenario.write_text(SIPP_UAC_REGISTERING)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.settimeout(10)
        port = sock.getsockname()[1]
        target = f"127.0.0.1:{port}"
        cmd = sipp_command(scenario, free_udp_port(), "-au", "alice", "-ap", password, target)
        sipp = start_sipp(tmp_path, cmd)
        try:
            first, addr = sock.recvfrom(65535)
            register = sipmessage.Message.parse(first)
            assert isinstance(register, sipmessage.Request)
            sock.sendto(bytes(reply(register, 401, server.challenge())), addr)

            while True:  # skip retransmissions of the first REGISTER
                data, addr = sock.recvfrom(65535)
                second = sipmessage.Message.parse(data)
                assert isinstance(second, sipmessage.Request)
                if second.cseq.sequence == 2:
                    break
            assert second.headers.get("Authorization") is not None
            user = server.verify(second)
            assert user == expected
            sock.sendto(bytes(reply(second, 200 if user else 403)), addr)
            # sipp's exit status says whether its scenario (ending in a 200) succeeded.
            assert (sipp.wait(timeout=20) == 0) == (expected is not None)
        finally:
            if sipp.poll() is None:
                sipp.kill()
            sipp.wait()


def reply(
    request: sipmessage.Request, code: int, challenge: str | None = None
) -> sipmessage.Response:
    phrases = {200: "OK", 401: "Unauthorized", 403: "Forbidden"}
    resp = sipmessage.Response(code, phrases[code])
    for name in ("Via", "From", "To", "Call-ID", "CSeq"):
        resp.headers.setlist(name, list(request.headers.getlist(name)))
    if challenge is not None:
        resp.headers.add("WWW-Authenticate", challenge)
    resp.headers.add("Content-Length", "0")
    return resp
