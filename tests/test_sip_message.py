"""gateway.sip.message: parsing with validation (RFC 3261, RFC 4475 torture messages), builders.

Pure tests: no sockets, no event loop. Messages are written with LF and sent with CRLF.
"""

from __future__ import annotations

import pytest
from sipmessage import URI, Address, Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.message import SipParseError


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


SDP = (
    "v=0\no=mhandley 29739 7272939 IN IP4 192.0.2.3\ns=-\nc=IN IP4 192.0.2.4\n"
    "t=0 0\nm=audio 49217 RTP/AVP 0 12\nm=video 3227 RTP/AVP 31\na=rtpmap:31 LPC\n"
)
assert len(crlf(SDP)) == 150  # the length RFC 4475's messages declare

INVITE = (
    """INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport
Via: SIP/2.0/TCP proxy.example.com;branch=z9hG4bKdef
Max-Forwards: 70
From: "Alice" <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>
Call-ID: call-1@192.0.2.1
CSeq: 7 INVITE
Contact: <sip:alice@192.0.2.1:5060>
Content-Type: application/sdp
Content-Length: 150

"""
    + SDP
)


def test_parse_request() -> None:
    message = sipmsg.parse(crlf(INVITE))
    assert isinstance(message, Request)
    assert message.method == "INVITE"
    assert str(message.uri) == "sip:bob@example.com"
    assert [via.host for via in message.via] == ["192.0.2.1", "proxy.example.com"]
    assert sipmsg.branch_of(message) == "z9hG4bKabc"
    assert sipmsg.tag_of(message.from_address) == "a1"
    assert sipmsg.tag_of(message.to_address) is None
    assert message.call_id == "call-1@192.0.2.1"
    assert (message.cseq.sequence, message.cseq.method) == (7, "INVITE")
    assert message.body == crlf(SDP)


def test_parse_response() -> None:
    text = """SIP/2.0 180 Ringing
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKabc;rport=5060;received=192.0.2.1
From: <sip:alice@example.com>;tag=a1
To: <sip:bob@example.com>;tag=b2
Call-ID: call-1@192.0.2.1
CSeq: 7 INVITE
Content-Length: 0

"""
    message = sipmsg.parse(crlf(text))
    assert isinstance(message, Response)
    assert (message.code, message.phrase) == (180, "Ringing")
    assert sipmsg.tag_of(message.to_address) == "b2"
    assert message.cseq.method == "INVITE"
    assert message.body == b""


def test_compact_header_forms() -> None:
    text = """OPTIONS sip:bob@example.com SIP/2.0
v: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKcompact
f: <sip:alice@example.com>;tag=1
t: <sip:bob@example.com>
i: compact@192.0.2.1
CSeq: 1 OPTIONS
m: <sip:alice@192.0.2.1>
c: text/plain
l: 5

hello"""
    message = sipmsg.parse(crlf(text))
    assert sipmsg.branch_of(message) == "z9hG4bKcompact"
    assert message.from_address.uri.user == "alice"
    assert message.to_address.uri.user == "bob"
    assert message.call_id == "compact@192.0.2.1"
    assert message.contact[0].uri.host == "192.0.2.1"
    assert message.headers.get("Content-Type") == "text/plain"
    assert message.body == b"hello"


def test_lf_only_message_is_rejected_clearly() -> None:
    # sipmessage only splits on CRLF; RFC 3261 section 7 requires CRLF.
    with pytest.raises(SipParseError, match="bare LF") as info:
        sipmsg.parse(INVITE.encode())
    assert info.value.request is None


def test_truncated_message() -> None:
    with pytest.raises(SipParseError, match="no end of headers") as info:
        sipmsg.parse(crlf(INVITE)[:100])
    assert info.value.request is None


def test_folded_headers_and_space_before_colon() -> None:
    """RFC 3261 section 7.3.1: folding, and LWS before the colon, are legal."""
    text = """OPTIONS sip:bob@example.com SIP/2.0
Via  : SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKfold
From:
 <sip:alice@example.com>
  ;tag=1
To : <sip:bob@example.com>
Contact:
 <sip:alice@192.0.2.1>
Call-ID: fold@192.0.2.1
CSeq: 1
\tOPTIONS
Content-Length   : 2

ok"""
    message = sipmsg.parse(crlf(text))
    assert sipmsg.branch_of(message) == "z9hG4bKfold"
    assert sipmsg.tag_of(message.from_address) == "1"
    assert message.to_address.uri.user == "bob"
    # Folded continuations must not turn into headers of their own (" <sip" before the fix).
    assert message.contact[0].uri.host == "192.0.2.1"
    assert all(not key.startswith((" ", "\t")) for key in message.headers.keys())
    assert message.cseq.method == "OPTIONS"
    assert message.body == b"ok"


# --- RFC 4475 torture messages ------------------------------------------------------------

VALID: dict[str, str] = {
    # 3.1.1.3: % escaping in the Request-URI, To, From and Contact (folded).
    "esc01": """INVITE sip:sips%3Auser%40example.com@example.net SIP/2.0
To: sip:%75se%72@example.com
From: <sip:I%20have%20spaces@example.net>;tag=938
Max-Forwards: 87
i: esc01.239409asdfakjkn23onasd0-3234
CSeq: 234234 INVITE
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bKkdjuw
C: application/sdp
Contact:
  <sip:cal%6Cer@host5.example.net;%6C%72;n%61me=v%61lue%25%34%31>
Content-Length: 150

"""
    + SDP,
    # 3.1.1.5: % is not an escape in a method; an unknown method with a matching CSeq.
    "esc02": """RE%47IST%45R sip:registrar.example.com SIP/2.0
To: "%Z%45" <sip:resource@example.com>
From: "%Z%45" <sip:resource@example.com>;tag=f232jadfj23
Call-ID: esc02.asdfnqwo34rq23i34jrjasdcnl23nrlknsdf
Via: SIP/2.0/TCP host.example.com;rport;branch=z9hG4bK209%fzsnel234
CSeq: 29344 RE%47IST%45R
Max-Forwards: 70
Contact: <sip:alias1@host1.example.com>
C%6Fntact: <sip:alias2@host2.example.com>
Contact: <sip:alias3@host3.example.com>
l: 0

""",
    # 3.1.1.6: no LWS between display name and <.
    "lwsdisp": """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: caller<sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID: lwsdisp.1234abcd@funky.example.com
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP funky.example.com;branch=z9hG4bKkdjuw
l: 0

""",
    # 3.1.1.9: semicolon in the user part, and a folded Accept.
    "semiuri": """OPTIONS sip:user;par=u%40example.net@example.com SIP/2.0
To: sip:j_user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Call-ID: semiuri.0ha0isndaksdj
CSeq: 8 OPTIONS
Accept: application/sdp, application/pkcs7-mime,
        multipart/mixed, multipart/signed,
        message/sip, message/sipfrag
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKkdjuw
l: 0

""",
    # 3.1.1.10: transports we do not know in lower Vias.
    "transports": """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: <sip:caller@example.com>;tag=323
Max-Forwards: 70
Call-ID:  transports.kijh4akdnaqjkwendsasfdj
Accept: application/sdp
CSeq: 60 OPTIONS
Via: SIP/2.0/UDP t1.example.com;branch=z9hG4bKkdjuw
Via: SIP/2.0/SCTP t2.example.com;branch=z9hG4bKklasjdhf
Via: SIP/2.0/TLS t3.example.com;branch=z9hG4bK2980unddj
Via: SIP/2.0/UNKNOWN t4.example.com;branch=z9hG4bKasd0f3en
Via: SIP/2.0/TCP t5.example.com;branch=z9hG4bK0a9idfnee
l: 0

""",
    # 3.1.1.12: a UTF-8 reason phrase.
    "unreason": """SIP/2.0 200 = 2**3 * 5**2 но сто девяносто девять - простое
Via: SIP/2.0/UDP 192.0.2.198;branch=z9hG4bK1324923
Call-ID: unreason.1234ksdfak3j2erwedfsASdf
CSeq: 35 INVITE
From: sip:user@example.com;tag=11141343
To: sip:user@example.edu;tag=2229
Content-Length: 150
Content-Type: application/sdp
Contact: <sip:user@host198.example.com>

"""
    + SDP,
    # 3.1.1.13: an empty reason phrase.
    "noreason": "SIP/2.0 100 \n"  # the space before LF is the (empty) reason's separator
    """Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: noreason.asndj203insdf99223ndf
CSeq: 35 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Content-Length: 0
Contact: <sip:user@host105.example.com>

""",
    # 3.1.3.1: a branch that is only the magic cookie.
    "badbranch": """OPTIONS sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.org;tag=33242
Max-Forwards: 3
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bK
Accept: application/sdp
Call-ID: badbranch.sadonfo23i420jv0as0derf3j3n
CSeq: 8 OPTIONS
l: 0

""",
    # 3.2.1: an RFC 2543 request (no branch).
    "inv2543": """INVITE sip:UserB@example.com SIP/2.0
Via: SIP/2.0/UDP iftgw.example.com
From: <sip:+13035551111@ift.here.example.com;user=phone>
Record-Route: <sip:UserB@example.com;maddr=ss1.example.com>
To: sip:+16505552222@ss1.example.net;user=phone
Call-ID: inv2543.1717@ift.here.example.com
CSeq: 56 INVITE
Content-Type: application/sdp
Content-Length: 150

"""
    + SDP,
}


@pytest.mark.parametrize("name", sorted(VALID))
def test_rfc4475_valid_messages_parse(name: str) -> None:
    message = sipmsg.parse(crlf(VALID[name]))
    assert message.call_id.startswith(name)
    if isinstance(message, Request):
        assert message.cseq.method == message.method
    # A parsed message serialises and parses back to the same headers that matter.
    again = sipmsg.parse(sipmsg.serialize(message))
    assert (again.call_id, str(again.cseq), again.body) == (
        message.call_id,
        str(message.cseq),
        message.body,
    )


def test_rfc4475_details() -> None:
    esc01 = sipmsg.parse(crlf(VALID["esc01"]))
    assert isinstance(esc01, Request)
    assert esc01.uri.user == "sips:user@example.com"  # sipmessage unescapes the user part
    assert esc01.headers.get("Content-Type") == "application/sdp"  # compact "C"
    assert esc01.contact[0].uri.host == "host5.example.net"  # folded Contact
    esc02 = sipmsg.parse(crlf(VALID["esc02"]))
    assert isinstance(esc02, Request) and esc02.method == "RE%47IST%45R"
    lwsdisp = sipmsg.parse(crlf(VALID["lwsdisp"]))
    assert (lwsdisp.from_address.name, lwsdisp.from_address.uri.user) == ("caller", "caller")
    semiuri = sipmsg.parse(crlf(VALID["semiuri"]))
    assert isinstance(semiuri, Request) and semiuri.uri.user == "user;par=u@example.net"
    assert str(semiuri.uri) == "sip:user;par=u%40example.net@example.com"  # escaped again
    assert "message/sipfrag" in (semiuri.headers.get("Accept") or "")
    transports = sipmsg.parse(crlf(VALID["transports"]))
    assert [via.transport for via in transports.via] == ["UDP", "SCTP", "TLS", "UNKNOWN", "TCP"]
    unreason = sipmsg.parse(crlf(VALID["unreason"]))
    assert isinstance(unreason, Response) and unreason.phrase.endswith("простое")
    noreason = sipmsg.parse(crlf(VALID["noreason"]))
    assert isinstance(noreason, Response) and (noreason.code, noreason.phrase) == (100, "")
    assert sipmsg.branch_of(sipmsg.parse(crlf(VALID["badbranch"]))) == "z9hG4bK"
    assert sipmsg.branch_of(sipmsg.parse(crlf(VALID["inv2543"]))) == ""


def test_rfc4475_dblreq_bytes_past_content_length_are_discarded() -> None:
    # 3.1.1.8: a REGISTER with Content-Length 0 followed by a whole INVITE in one datagram.
    register = """REGISTER sip:example.com SIP/2.0
To: sip:j.user@example.com
From: sip:j.user@example.com;tag=43251j3j324
Max-Forwards: 8
I: dblreq.0ha0isndaksdj99sdfafnl3lk233412
Contact: sip:j.user@host.example.com
CSeq: 8 REGISTER
Via: SIP/2.0/UDP 192.0.2.125;branch=z9hG4bKkdjuw23492
Content-Length: 0

"""
    invite = """INVITE sip:joe@example.com SIP/2.0
t: sip:joe@example.com
From: sip:caller@example.net;tag=141334
Max-Forwards: 8
Call-ID: dblreq.0ha0isnda977644900765@192.0.2.15
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.15;branch=z9hG4bKkdjuw380234
Content-Type: application/sdp
Content-Length: 150

"""
    message = sipmsg.parse(crlf(register + invite + SDP))
    assert isinstance(message, Request)
    assert message.method == "REGISTER"
    assert message.call_id == "dblreq.0ha0isndaksdj99sdfafnl3lk233412"
    assert message.body == b""


def test_rfc4475_wsinv_is_accepted_on_its_top_via() -> None:
    """3.1.1.1 wsinv is valid. Only the top Via is checked on receipt (it is the one a
    response goes back on), and that one parses; sipmessage's grammar has no LWS inside
    the lower, compact-form Via values, which only matter to whoever reads them all.

    Everything else in it (folding all over, spaces before colons, compact and long forms
    of one header, odd case) parses: the variant with the two Via values tidied reads whole.
    """
    wsinv = """INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0
TO :
 sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n
from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>
  ;
  tag = 98asjd8
MaX-fOrWaRdS: 0068
Call-ID: wsinv.ndaksdj@192.0.2.1
Content-Length   : 150
cseq: 0009
  INVITE
Via  : SIP  /   2.0
 /UDP
    192.0.2.2;branch=390skdjuw
s :
NewFangledHeader:   newfangled value
 continued newfangled value
UnknownHeaderWithUnusualValue: ;;,,;;,;
Content-Type: application/sdp
Route:
 <sip:services.example.com;lr;unknownwith=value;unknown-no-value>
v:  SIP  / 2.0  / TCP     spindle.example.com   ;
  branch  =   z9hG4bK9ikj8  ,
 SIP  /    2.0   / UDP  192.168.255.111   ; branch=
 z9hG4bK30239
m:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =
      newvalue ;
  secondparam ; q = 0.33

"""
    accepted = sipmsg.parse(crlf(wsinv + SDP))
    assert sipmsg.top_via(accepted).host == "192.0.2.2"
    assert sipmsg.branch_of(accepted) == "390skdjuw"
    tidy = wsinv.replace("SIP  /   2.0\n /UDP\n    192.0.2.2", "SIP/2.0/UDP 192.0.2.2")
    tidy = tidy.replace(
        "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\n  branch  =   z9hG4bK9ikj8  ,\n"
        " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\n z9hG4bK30239",
        "v: SIP/2.0/TCP spindle.example.com;branch=z9hG4bK9ikj8,"
        " SIP/2.0/UDP 192.168.255.111;branch=z9hG4bK30239",
    )
    message = sipmsg.parse(crlf(tidy + SDP))
    assert isinstance(message, Request)
    assert [via.host for via in message.via] == [
        "192.0.2.2",
        "spindle.example.com",
        "192.168.255.111",
    ]
    assert sipmsg.tag_of(message.to_address) == "1918181833n"
    assert sipmsg.tag_of(message.from_address) == "98asjd8"
    assert (message.cseq.sequence, message.cseq.method) == (9, "INVITE")
    assert message.headers.get("NewFangledHeader") == "newfangled value continued newfangled value"
    assert message.headers.get("Subject") == ""
    assert message.route[0].uri.host == "services.example.com"
    assert message.contact[0].parameters.get("q") == "0.33"
    assert len(message.body) == 150


# name: (message, reason fragment, the status answered, or None when it is dropped)
INVALID: dict[str, tuple[str, str, int | None]] = {
    # 3.1.2.2: Content-Length larger than the message.
    "clerr": (
        """INVITE sip:user@example.com SIP/2.0
Max-Forwards: 80
To: sip:j.user@example.com
From: sip:caller@example.net;tag=93942939o2
Contact: <sip:caller@hungry.example.net>
Call-ID: clerr.0ha0isndaksdjweiafasdk3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host5.example.com;branch=z9hG4bK-39234-23523
Content-Type: application/sdp
Content-Length: 9999

"""
        + SDP,
        "body shorter than Content-Length",
        400,
    ),
    # 3.1.2.3: negative Content-Length.
    "ncl": (
        """INVITE sip:user@example.com SIP/2.0
Max-Forwards: 254
To: sip:j.user@example.com
From: sip:caller@example.net;tag=32394234
Call-ID: ncl.0ha0isndaksdj2193423r542w35
CSeq: 0 INVITE
Via: SIP/2.0/UDP 192.0.2.53;branch=z9hG4bKkdjuw
Contact: <sip:caller@example53.example.net>
Content-Type: application/sdp
Content-Length: -999

"""
        + SDP,
        "bad Content-Length",
        400,
    ),
    # 3.1.2.4: CSeq number above 2**32 - 1 in a request: 400.
    "scalar02": (
        """REGISTER sip:example.com SIP/2.0
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bK342sdfoi3
To: <sip:user@example.com>
From: <sip:user@example.com>;tag=239232jh3
CSeq: 36893488147419103232 REGISTER
Call-ID: scalar02.23o0pd9vanlq3wnrlnewofjas9ui32
Max-Forwards: 300
Expires: 1000000000
Contact: <sip:user@host129.example.com>;expires=280297596632815
l: 0

""",
        "CSeq number too large",
        400,
    ),
    # 3.1.2.5: the same in a response: dropped.
    "scalarlg": (
        """SIP/2.0 503 Service Unavailable
Via: SIP/2.0/TCP host129.example.com;branch=z9hG4bKzzxdiwo34sw;received=192.0.2.129
To: <sip:user@example.com>
From: <sip:other@example.net>;tag=2easdjfejw
CSeq: 9292394834772304023312 OPTIONS
Call-ID: scalarlg.noase0of0234hn2qofoaf0232aewf2394r
Retry-After: 949302838503028349304023988
Content-Length: 0

""",
        "CSeq number too large",
        None,
    ),
    # 3.1.2.6: unterminated quoted string in the To display name.
    "quotbal": (
        """INVITE sip:user@example.com SIP/2.0
To: "Mr. J. User <sip:j.user@example.com>
From: sip:caller@example.net;tag=93334
Max-Forwards: 10
Call-ID: quotbal.aksdj
Contact: <sip:caller@host59.example.net>
CSeq: 8 INVITE
Via: SIP/2.0/UDP 192.0.2.59:5050;branch=z9hG4bKkdjuw39234
Content-Type: application/sdp
Content-Length: 150

"""
        + SDP,
        "bad To header",
        400,
    ),
    # 3.1.2.7: <> around the Request-URI.
    "ltgtruri": (
        """INVITE <sip:user@example.com> SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=39291
Max-Forwards: 23
Call-ID: ltgtruri.1@192.0.2.5
CSeq: 1 INVITE
Via: SIP/2.0/UDP 192.0.2.5
Contact: <sip:caller@host5.example.net>
Content-Length: 0

""",
        "unparseable",
        400,
    ),
    # 3.1.2.8: LWS inside the Request-URI.
    "lwsruri": (
        """INVITE sip:user@example.com; lr SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsruri.asdfasdoeoi2323-asdfwrn23-asd834rk423
CSeq: 2130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Length: 0

""",
        "malformed Request-Line",
        400,
    ),
    # 3.1.2.9: several SP between the Request-Line elements.
    "lwsstart": (
        """INVITE  sip:user@example.com  SIP/2.0
To: sip:user@example.com;tag=3xfe-9921883-z9f
From: sip:caller@example.net;tag=231413434
Max-Forwards: 5
Call-ID: lwsstart.dfknq234oi243099adsdfnawe3@example.com
CSeq: 1130706432 INVITE
Via: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bKkdjuw2395
Contact: <sip:caller@host1.example.net>
Content-Length: 0

""",
        "malformed Request-Line: extra whitespace",
        400,
    ),
    # 3.1.2.10: trailing SP after the SIP version.
    "trws": (
        "OPTIONS sip:remote-target@example.com SIP/2.0  \n"
        """Via: SIP/2.0/TCP host1.example.com;branch=z9hG4bK299342093
To: <sip:remote-target@example.com>
From: <sip:local-resource@example.com>;tag=329429089
Call-ID: trws.oicu34958239neffasdhr2345r
Accept: application/sdp
CSeq: 238923 OPTIONS
Max-Forwards: 70
Content-Length: 0

""",
        "malformed Request-Line: extra whitespace",
        400,
    ),
    # 3.1.2.11: escaped headers in the Request-URI.
    "escruri": (
        """INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=341518
Max-Forwards: 7
Contact: <sip:caller@host39923.example.net>
Call-ID: escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5
CSeq: 149209342 INVITE
Via: SIP/2.0/UDP host-of-the-hour.example.com;branch=z9hG4bKkdjuw
Content-Length: 0

""",
        "unparseable message: URI is not valid",
        400,
    ),
    # 3.1.2.13: a Contact URI with headers not enclosed in <>.
    "regbadct": (
        """REGISTER sip:example.com SIP/2.0
To: sip:user@example.com
From: sip:user@example.com;tag=998332
Max-Forwards: 70
Call-ID: regbadct.k345asrl3fdbv@10.0.0.1
CSeq: 1 REGISTER
Via: SIP/2.0/UDP 135.180.130.133:5060;branch=z9hG4bKkdjuw
Contact: sip:user@example.com?Route=%3Csip:sip.example.com%3E
l: 0

""",
        "bad Contact header",
        400,
    ),
    # 3.1.2.14: spaces inside the <> of an addr-spec.
    "badaspec": (
        """OPTIONS sip:user@example.org SIP/2.0
Via: SIP/2.0/UDP host4.example.com:5060;branch=z9hG4bKkdju43234
Max-Forwards: 70
From: "Bell, Alexander" <sip:a.g.bell@example.com>;tag=433423
To: "Watson, Thomas" < sip:t.watson@example.org >
Call-ID: badaspec.sdf0234n2nds0a099u23h3hnnw009cdkne3
Accept: application/sdp
CSeq: 3923239 OPTIONS
l: 0

""",
        "bad To header",
        400,
    ),
    # 3.1.2.15: non-token characters in an unquoted display name.
    "baddn": (
        """OPTIONS sip:t.watson@example.org SIP/2.0
Via:     SIP/2.0/UDP c.example.com:5060;branch=z9hG4bKkdjuw
Max-Forwards:      70
From:    Bell, Alexander <sip:a.g.bell@example.com>;tag=43
To:      Watson, Thomas <sip:t.watson@example.org>
Call-ID: baddn.31415@c.example.com
Accept: application/sdp
CSeq:    3923239 OPTIONS
l: 0

""",
        "bad From header",
        400,
    ),
    # 3.1.2.16: unknown protocol version.
    "badvers": (
        """OPTIONS sip:t.watson@example.org SIP/7.0
Via:     SIP/7.0/UDP c.example.com;branch=z9hG4bKkdjuw
Max-Forwards:     70
From:    A. Bell <sip:a.g.bell@example.com>;tag=qweoiqpe
To:      T. Watson <sip:t.watson@example.org>
Call-ID: badvers.31417@c.example.com
CSeq:    1 OPTIONS
l: 0

""",
        "SIP version SIP/7.0 not supported",
        505,
    ),
    # 3.1.2.17: CSeq method does not match the request method.
    "mismatch01": (
        """OPTIONS sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch01.dj0234sxdfl3
CSeq: 8 INVITE
Via: SIP/2.0/UDP host.example.com;branch=z9hG4bKkdjuw
l: 0

""",
        "CSeq method does not match",
        400,
    ),
    # 3.1.2.18: an unknown method whose CSeq names another.
    "mismatch02": (
        """NEWMETHOD sip:user@example.com SIP/2.0
To: sip:j.user@example.com
From: sip:caller@example.net;tag=34525
Max-Forwards: 6
Call-ID: mismatch02.dj0234sxdfl3
CSeq: 8 INVITE
Contact: <sip:caller@host.example.net>
Via: SIP/2.0/UDP host.example.net;branch=z9hG4bKkdjuw
l: 0

""",
        "CSeq method does not match",
        400,
    ),
    # 3.1.2.19: a status code past 699: dropped.
    "bigcode": (
        """SIP/2.0 4294967301 better not break the receiver
Via: SIP/2.0/UDP 192.0.2.105;branch=z9hG4bK2398ndaoe
Call-ID: bigcode.asdof3uj203asdnf3429uasdhfas3ehjasdfas9i
CSeq: 353494 INVITE
From: <sip:user@example.com>;tag=39ansfi3
To: <sip:user@example.edu>;tag=902jndnke3
Contact: <sip:user@host105.example.com>
Content-Length: 0

""",
        "status code 4294967301 out of range",
        None,
    ),
    # 3.3.1: Call-ID, From and To missing: no response can be built.
    "insuf": (
        """INVITE sip:user@example.com SIP/2.0
CSeq: 193942 INVITE
Via: SIP/2.0/UDP 192.0.2.95;branch=z9hG4bKkdj.insuf
Content-Type: application/sdp
l: 150

"""
        + SDP,
        "missing From",
        None,
    ),
    # 3.3.2: a Request-URI with a scheme nobody knows: 416.
    "unkscm": (
        """OPTIONS nobodyKnowsThisScheme:totallyopaquecontent SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: unkscm.nasdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0

""",
        "URI scheme nobodyKnowsThisSchem not supported",
        416,
    ),
    # 3.3.3: a Request-URI with a scheme we do not serve: 416.
    "novelsc": (
        """OPTIONS soap.beep://192.0.2.103:3002 SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 3
Call-ID: novelsc.asdfasser0q239nwsdfasdkl34
CSeq: 3923423 OPTIONS
Via: SIP/2.0/TCP host9.example.com;branch=z9hG4bKkdjuw39234
Content-Length: 0

""",
        "URI scheme soap.beep not supported",
        416,
    ),
    # Issue 11: an INVITE whose Contact cannot be a remote target (not from RFC 4475).
    "badcontact": (
        """INVITE sip:user@example.com SIP/2.0
To: sip:user@example.com
From: sip:caller@example.net;tag=384
Max-Forwards: 70
Call-ID: badcontact.1
CSeq: 1 INVITE
Contact: <sip:@@>
Via: SIP/2.0/UDP host9.example.com;branch=z9hG4bKbadcontact
Content-Length: 0

""",
        "bad Contact header",
        400,
    ),
    # 3.3.9: two Call-ID, CSeq, From and To values.
    "multi01": (
        """INVITE sip:user@company.com SIP/2.0
Contact: <sip:caller@host25.example.net>
Via: SIP/2.0/UDP 192.0.2.25;branch=z9hG4bKkdjuw
Max-Forwards: 70
CSeq: 5 INVITE
Call-ID: multi01.98asdh@192.0.2.1
CSeq: 59 INVITE
Call-ID: multi01.98asdh@192.0.2.2
From: sip:caller@example.com;tag=3413415
To: sip:user@example.com
To: sip:other@example.net
From: sip:caller@example.net;tag=2923420123
Content-Type: application/sdp
l: 154
Contact: <sip:caller@host36.example.net>
Max-Forwards: 5

"""
        + SDP
        + "XXXX",
        "more than one",
        400,
    ),
    # 3.1.2.x mcl01: two Content-Length values.
    "mcl01": (
        """OPTIONS sip:user@example.com SIP/2.0
Via: SIP/2.0/UDP host5.example.net;branch=z9hG4bK293423
To: sip:user@example.com
From: sip:other@example.net;tag=3923942
Call-ID: mcl01.fhn2323orihawfdoa3o4r52o3irsdf
CSeq: 15932 OPTIONS
Content-Length: 13
Max-Forwards: 60
Content-Length: 5
Content-Type: text/plain

There's no way to know how many octets are supposed to be here.
""",
        "more than one Content-Length",
        400,
    ),
}


@pytest.mark.parametrize("name", sorted(INVALID))
def test_rfc4475_invalid_messages_are_rejected(name: str) -> None:
    text, reason, status = INVALID[name]
    with pytest.raises(SipParseError) as info:
        sipmsg.parse(crlf(text))
    assert reason in info.value.reason
    assert str(info.value) == info.value.reason
    # Our own error, chained to nothing a library raised (which could hold the datagram).
    assert info.value.__cause__ is None and info.value.__context__ is None
    if status is None:
        assert info.value.request is None
        return
    request = info.value.request
    assert request is not None
    assert info.value.status == status
    # The transport answers with exactly this: it must be buildable, and it echoes the
    # request's Via, Call-ID and CSeq verbatim (so scalar02's big CSeq goes back as it came).
    phrase = f"{sipmsg.reason_phrase(status)} ({info.value.reason})"
    bad = sipmsg.make_response(request, status, phrase)
    data = sipmsg.serialize(bad)
    assert data.startswith(f"SIP/2.0 {status} {phrase}\r\n".encode())
    assert bad.headers.getlist("Via") == request.headers.getlist("Via")
    assert f"Call-ID: {request.headers['Call-ID']}\r\n".encode() in data
    assert f"CSeq: {request.headers['CSeq']}\r\n".encode() in data


# --- validation beyond the torture suite ---------------------------------------------------


def test_content_length_larger_than_body() -> None:
    data = crlf(INVITE.replace("Content-Length: 150", "Content-Length: 151"))
    with pytest.raises(SipParseError, match="body shorter than Content-Length") as info:
        sipmsg.parse(data)
    assert isinstance(info.value.request, Request)


def test_non_numeric_content_length() -> None:
    data = crlf(INVITE.replace("Content-Length: 150", "Content-Length: lots"))
    with pytest.raises(SipParseError, match="bad Content-Length") as info:
        sipmsg.parse(data)
    assert info.value.request is not None


def test_bytes_past_content_length_are_discarded() -> None:
    data = crlf(INVITE.replace("Content-Length: 150", "Content-Length: 4"))
    message = sipmsg.parse(data)
    assert message.body == b"v=0\r"


def test_no_content_length_keeps_the_whole_datagram_body() -> None:
    # Allowed on UDP (RFC 3261 section 18.3); the transport enforces it on streams.
    data = crlf(INVITE.replace("Content-Length: 150\n", ""))
    assert sipmsg.parse(data).body == crlf(SDP)


@pytest.mark.parametrize("header", ["Via", "From", "To", "Call-ID", "CSeq"])
def test_missing_mandatory_header(header: str) -> None:
    lines = [line for line in INVITE.split("\n") if not line.startswith(f"{header}:")]
    assert len(lines) < len(INVITE.split("\n"))
    with pytest.raises(SipParseError, match=f"missing {header} header") as info:
        sipmsg.parse(crlf("\n".join(lines)))
    # Without these a 400 cannot be addressed (Via) or matched (the others).
    assert info.value.request is None


def test_empty_call_id() -> None:
    with pytest.raises(SipParseError, match="empty Call-ID"):
        sipmsg.parse(crlf(INVITE.replace("Call-ID: call-1@192.0.2.1", "Call-ID:")))


def test_bad_cseq_still_answerable() -> None:
    with pytest.raises(SipParseError, match="bad CSeq") as info:
        sipmsg.parse(crlf(INVITE.replace("CSeq: 7 INVITE", "CSeq: seven INVITE")))
    assert info.value.request is not None


def test_cseq_method_mismatch() -> None:
    with pytest.raises(SipParseError, match="does not match") as info:
        sipmsg.parse(crlf(INVITE.replace("CSeq: 7 INVITE", "CSeq: 7 BYE")))
    assert isinstance(info.value.request, Request)
    assert info.value.request.method == "INVITE"


def test_response_errors_never_carry_a_request() -> None:
    response = """SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKr
From: <sip:alice@example.com>;tag=a
To: <sip:bob@example.com>;tag=b
Call-ID: r@192.0.2.1
CSeq: 1 INVITE
Content-Length: 10

short"""
    with pytest.raises(SipParseError, match="body shorter") as info:
        sipmsg.parse(crlf(response))
    assert info.value.request is None


def test_cseq_at_the_32_bit_limit_is_accepted() -> None:
    data = crlf(INVITE.replace("CSeq: 7 INVITE", f"CSeq: {2**32 - 1} INVITE"))
    assert sipmsg.parse(data).cseq.sequence == 2**32 - 1


@pytest.mark.parametrize("code", [99, 700, 0])
def test_status_code_out_of_range(code: int) -> None:
    text = f"SIP/2.0 {code} Odd\nVia: SIP/2.0/UDP h;branch=z9hG4bKx\n\n"
    with pytest.raises(SipParseError, match="out of range"):
        sipmsg.parse(crlf(text))


def test_header_block_too_large() -> None:
    padding = "X-Padding: " + "a" * (sipmsg.MAX_HEADER_BYTES) + "\n"
    data = crlf(INVITE.replace("Max-Forwards: 70\n", "Max-Forwards: 70\n" + padding))
    assert len(data) < sipmsg.MAX_MESSAGE_SIZE
    with pytest.raises(SipParseError, match="header block too large") as info:
        sipmsg.parse(data)
    assert info.value.request is None


def test_too_many_header_lines() -> None:
    padding = "X-J: 1\n" * (sipmsg.MAX_HEADER_LINES + 1)
    data = crlf(INVITE.replace("Max-Forwards: 70\n", "Max-Forwards: 70\n" + padding))
    with pytest.raises(SipParseError, match="too many header lines"):
        sipmsg.parse(data)


def test_message_too_large() -> None:
    data = crlf(INVITE) + b"x" * sipmsg.MAX_MESSAGE_SIZE
    with pytest.raises(SipParseError, match="message too large"):
        sipmsg.parse(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        bytes(range(256)) * 4,
        b"HELLO\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nNoColonHere\r\n\r\n",
        b"INVITE sip:x SIP/2.0\r\nVia: \xff\xfe\r\n\r\n",
    ],
)
def test_junk_is_a_parse_error_not_a_crash(data: bytes) -> None:
    with pytest.raises(SipParseError) as info:
        sipmsg.parse(data)
    assert info.value.reason and info.value.request is None


# --- responses, serialisation and builders --------------------------------------------------


def invite_request() -> Request:
    message = sipmsg.parse(crlf(INVITE))
    assert isinstance(message, Request)
    return message


def test_make_response_copies_the_transaction_headers() -> None:
    request = invite_request()
    request.headers.add("Record-Route", "<sip:proxy.example.com;lr>")
    response = sipmsg.make_response(request, 180, to_tag="b2")
    assert (response.code, response.phrase) == (180, "Ringing")
    # Section 8.2.6.2: every Via, in order, From, Call-ID and CSeq unchanged.
    assert response.headers.getlist("Via") == request.headers.getlist("Via")
    assert len(response.via) == 2
    assert response.headers["From"] == request.headers["From"]
    assert response.headers["Call-ID"] == request.headers["Call-ID"]
    assert response.headers["CSeq"] == request.headers["CSeq"]
    assert sipmsg.tag_of(response.to_address) == "b2"
    assert response.to_address.uri == request.to_address.uri
    # Nothing else leaks from the request.
    for header in ("Contact", "Record-Route", "Max-Forwards", "Content-Type"):
        assert response.headers.get(header) is None
    assert response.body == b""


def test_make_response_keeps_comma_joined_vias() -> None:
    request = invite_request()
    request.headers.setlist(
        "Via", ["SIP/2.0/UDP a.example.com;branch=z9hG4bK1, SIP/2.0/UDP b.example.com"]
    )
    response = sipmsg.make_response(request, 200, to_tag="t")
    assert [via.host for via in response.via] == ["a.example.com", "b.example.com"]


def test_make_response_100_gets_no_to_tag() -> None:
    response = sipmsg.make_response(invite_request(), 100, to_tag="b2")
    assert response.phrase == "Trying"
    assert sipmsg.tag_of(response.to_address) is None


def test_make_response_keeps_an_existing_to_tag() -> None:
    request = invite_request()
    request.headers.set("To", "<sip:bob@example.com>;tag=existing")
    response = sipmsg.make_response(request, 200, to_tag="other")
    assert sipmsg.tag_of(response.to_address) == "existing"


def test_make_response_without_tag_body_and_phrases() -> None:
    request = invite_request()
    plain = sipmsg.make_response(request, 486)
    assert (plain.phrase, plain.headers["To"]) == ("Busy Here", request.headers["To"])
    assert sipmsg.make_response(request, 299).phrase == "Unknown"
    assert sipmsg.make_response(request, 500, "Out of order CSeq").phrase == "Out of order CSeq"
    sdp = sipmsg.make_response(
        request, 200, to_tag="t", body=b"v=0\r\n", content_type="application/sdp"
    )
    assert sdp.body == b"v=0\r\n"
    assert sdp.headers["Content-Type"] == "application/sdp"


def test_serialize_sets_content_length() -> None:
    response = sipmsg.make_response(invite_request(), 200, to_tag="t", body=b"hello")
    response.headers.set("Content-Length", "999")  # whatever was there is replaced
    data = sipmsg.serialize(response)
    assert response.headers.getlist("Content-Length") == ["5"]
    assert data.endswith(b"\r\nContent-Length: 5\r\n\r\nhello")
    parsed = sipmsg.parse(data)
    assert isinstance(parsed, Response) and parsed.body == b"hello"
    empty = sipmsg.make_response(invite_request(), 100)
    assert b"\r\nContent-Length: 0\r\n\r\n" in sipmsg.serialize(empty)


def test_serialize_round_trip_of_a_request() -> None:
    request = invite_request()
    again = sipmsg.parse(sipmsg.serialize(request))
    assert isinstance(again, Request)
    assert again.headers.getlist("Via") == request.headers.getlist("Via")
    assert again.body == request.body


def test_build_request() -> None:
    spec = sipmsg.RequestSpec(
        method="INVITE",
        uri=URI.parse("sip:bob@example.com"),
        from_address=Address.parse("<sip:alice@example.com>;tag=a1"),
        to_address=Address.parse("<sip:bob@example.com>"),
        call_id="built@192.0.2.1",
        cseq=3,
        contact=Address.parse("<sip:alice@192.0.2.1:5070>"),
        route=(
            Address.parse("<sip:p1.example.com;lr>"),
            Address.parse("<sip:p2.example.com;lr>"),
        ),
        body=b"v=0\r\n",
        content_type="application/sdp",
        max_forwards=69,
        user_agent="test-agent",
    )
    request = sipmsg.build_request(spec)
    assert request.headers.getlist("Via") == []  # the transaction layer adds it
    assert request.method == "INVITE" and str(request.uri) == "sip:bob@example.com"
    assert request.headers["Max-Forwards"] == "69"
    assert [route.uri.host for route in request.route] == ["p1.example.com", "p2.example.com"]
    assert sipmsg.tag_of(request.from_address) == "a1"
    assert sipmsg.tag_of(request.to_address) is None
    assert request.call_id == "built@192.0.2.1"
    assert (request.cseq.sequence, request.cseq.method) == (3, "INVITE")
    assert request.contact[0].uri.port == 5070
    assert request.headers["User-Agent"] == "test-agent"
    assert request.headers["Content-Type"] == "application/sdp"
    # With a Via added it is a message our own parser accepts.
    request.headers.set("Via", "SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKb")
    parsed = sipmsg.parse(sipmsg.serialize(request))
    assert parsed.body == b"v=0\r\n"


def test_build_request_minimal() -> None:
    request = sipmsg.build_request(
        sipmsg.RequestSpec(
            method="OPTIONS",
            uri=URI.parse("sip:example.com"),
            from_address=Address.parse("<sip:a@example.com>;tag=x"),
            to_address=Address.parse("<sip:example.com>"),
            call_id="min",
            cseq=1,
        )
    )
    for header in ("Route", "Contact", "Content-Type"):
        assert request.headers.get(header) is None
    assert request.headers["Max-Forwards"] == "70"
    assert request.headers["User-Agent"] == "sipgw"


def test_identifiers() -> None:
    branches = {sipmsg.new_branch() for _ in range(100)}
    assert len(branches) == 100
    assert all(branch.startswith(sipmsg.MAGIC_COOKIE) for branch in branches)
    assert sipmsg.new_tag() != sipmsg.new_tag()
    assert sipmsg.new_call_id("192.0.2.1").endswith("@192.0.2.1")
    address = Address.parse('"Bob" <sip:bob@example.com>;foo=bar')
    tagged = sipmsg.with_tag(address, "t9")
    assert (sipmsg.tag_of(tagged), tagged.name) == ("t9", "Bob")
    assert tagged.parameters.get("foo") == "bar"
    assert sipmsg.tag_of(address) is None  # the original is a frozen value


def test_copy_request_is_independent() -> None:
    request = invite_request()
    copy = sipmsg.copy_request(request)
    copy.headers.set("CSeq", "8 INVITE")
    copy.headers.add("Via", "SIP/2.0/UDP extra.example.com")
    assert request.headers["CSeq"] == "7 INVITE"
    assert len(request.headers.getlist("Via")) == 2
    assert copy.body == request.body


@pytest.mark.parametrize(
    ("to", "tagged"),
    [
        ("<sip:bob@example.com>", "<sip:bob@example.com>;tag=ours"),
        ('"Bob;tag=x" <sip:bob@example.com>', '"Bob;tag=x" <sip:bob@example.com>;tag=ours'),
        ("<sip:bob@example.com;tag=uri-param>", "<sip:bob@example.com;tag=uri-param>;tag=ours"),
        ("sip:bob@example.com", "sip:bob@example.com;tag=ours"),
        ("<sip:bob@example.com>;tag=theirs", "<sip:bob@example.com>;tag=theirs"),
        ("sip:bob@example.com ; TAG = theirs", "sip:bob@example.com ; TAG = theirs"),
    ],
)
def test_response_to_gets_our_tag_only_when_it_has_none(to: str, tagged: str) -> None:
    request = sipmsg.parse(
        (
            "INVITE sip:bob@example.com SIP/2.0\r\n"
            "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK-1\r\n"
            "From: <sip:alice@example.com>;tag=a\r\n"
            f"To: {to}\r\n"
            "Call-ID: c1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
        ).encode()
    )
    assert isinstance(request, Request)
    trying = sipmsg.make_response(request, 100, to_tag="ours")
    ringing = sipmsg.make_response(request, 180, to_tag="ours")
    assert trying.headers["To"] == to
    assert ringing.headers["To"] == tagged
    again = sipmsg.parse(sipmsg.serialize(ringing))
    assert again.headers["To"] == tagged and again.headers["Call-ID"] == "c1"
