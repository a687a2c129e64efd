"""gateway.sip.dialog: dialog state from RFC 3261 section 12, built from parsed messages."""

from __future__ import annotations

import pytest
from sipmessage import URI, Address, Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.transport import Peer, TransportKind
from gateway.sip.values import peer_for_uri

ORIGIN = Peer(TransportKind.UDP, "192.0.2.10", 5060)
OUR_CONTACT = Address.parse("<sip:gw@192.0.2.1:5070>")


def crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


def parse_request(text: str) -> Request:
    message = sipmsg.parse(crlf(text))
    assert isinstance(message, Request)
    return message


def parse_response(text: str) -> Response:
    message = sipmsg.parse(crlf(text))
    assert isinstance(message, Response)
    return message


OUR_INVITE = """INVITE sip:bob@example.com SIP/2.0
Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKout1;rport
Max-Forwards: 70
From: "Gateway" <sip:gw@example.net>;tag=ourtag
To: <sip:bob@example.com>
Call-ID: uac-dialog@192.0.2.1
CSeq: 5 INVITE
Contact: <sip:gw@192.0.2.1:5070>
Content-Length: 0

"""

# Each proxy puts its Record-Route on top, so the one nearest the UAS comes first.
THEIR_200 = """SIP/2.0 200 OK
Via: SIP/2.0/UDP 192.0.2.1:5070;branch=z9hG4bKout1;rport=5070
Record-Route: <sip:near-uas.example.com;lr>
Record-Route: <sip:middle.example.com;lr>, <sip:near-uac.example.com:5080;lr;transport=tcp>
From: "Gateway" <sip:gw@example.net>;tag=ourtag
To: <sip:bob@example.com>;tag=theirtag
Call-ID: uac-dialog@192.0.2.1
CSeq: 5 INVITE
Contact: <sip:bob@198.51.100.7:5062>
Content-Length: 0

"""

THEIR_INVITE = """INVITE sip:gw@192.0.2.1:5070 SIP/2.0
Via: SIP/2.0/UDP near-uas.example.com;branch=z9hG4bKp2
Via: SIP/2.0/UDP 198.51.100.7:5062;branch=z9hG4bKin1
Record-Route: <sip:near-uas.example.com;lr>, <sip:near-uac.example.com;lr>
Max-Forwards: 69
From: <sip:carol@example.org>;tag=carol1
To: <sip:gw@example.net>
Call-ID: uas-dialog@198.51.100.7
CSeq: 101 INVITE
Contact: <sip:carol@198.51.100.7:5062;transport=tcp>
Content-Length: 0

"""


def uac_dialog(response: str = THEIR_200) -> Dialog:
    return Dialog.from_uac(parse_request(OUR_INVITE), parse_response(response), ORIGIN)


def uas_dialog() -> Dialog:
    return Dialog.from_uas(parse_request(THEIR_INVITE), "gwtag", ORIGIN, OUR_CONTACT)


def hosts(addresses: tuple[Address, ...] | list[Address]) -> list[str]:
    return [address.uri.host for address in addresses]


def test_from_uac() -> None:
    dialog = uac_dialog()
    assert dialog.call_id == "uac-dialog@192.0.2.1"
    assert (dialog.local_tag, dialog.remote_tag) == ("ourtag", "theirtag")
    assert dialog.key == ("uac-dialog@192.0.2.1", "ourtag")
    assert dialog.local_address.uri.user == "gw"
    assert sipmsg.tag_of(dialog.remote_address) == "theirtag"
    # Section 12.1.2: the route set is the Record-Route of the response, reversed...
    assert hosts(dialog.route_set) == [
        "near-uac.example.com",
        "middle.example.com",
        "near-uas.example.com",
    ]
    # ...and the remote target its Contact.
    assert str(dialog.remote_target) == "sip:bob@198.51.100.7:5062"
    assert (dialog.local_cseq, dialog.remote_cseq) == (5, None)
    assert dialog.contact.uri.port == 5070
    assert dialog.state is DialogState.CONFIRMED
    assert dialog.origin == ORIGIN


def test_from_uac_early_and_without_contact_or_record_route() -> None:
    ringing = (
        THEIR_200.replace("200 OK", "180 Ringing")
        .replace("Contact: <sip:bob@198.51.100.7:5062>\n", "")
        .replace("Record-Route: <sip:near-uas.example.com;lr>\n", "")
        .replace(
            "Record-Route: <sip:middle.example.com;lr>, "
            "<sip:near-uac.example.com:5080;lr;transport=tcp>\n",
            "",
        )
    )
    dialog = uac_dialog(ringing)
    assert dialog.state is DialogState.EARLY
    assert dialog.route_set == ()
    assert str(dialog.remote_target) == "sip:bob@example.com"  # the INVITE's Request-URI


def test_from_uas() -> None:
    dialog = uas_dialog()
    assert dialog.call_id == "uas-dialog@198.51.100.7"
    assert (dialog.local_tag, dialog.remote_tag) == ("gwtag", "carol1")
    assert dialog.key == ("uas-dialog@198.51.100.7", "gwtag")
    # Our address is the To of the INVITE with our tag; theirs is its From.
    assert dialog.local_address.uri.user == "gw"
    assert sipmsg.tag_of(dialog.local_address) == "gwtag"
    assert sipmsg.tag_of(dialog.remote_address) == "carol1"
    # Section 12.1.1: the route set is the Record-Route of the request, in order.
    assert hosts(dialog.route_set) == ["near-uas.example.com", "near-uac.example.com"]
    assert str(dialog.remote_target) == "sip:carol@198.51.100.7:5062;transport=tcp"
    assert (dialog.local_cseq, dialog.remote_cseq) == (0, 101)
    assert dialog.contact == OUR_CONTACT
    assert dialog.state is DialogState.EARLY


def test_new_request_in_dialog() -> None:
    dialog = uac_dialog()
    bye = dialog.new_request("BYE")
    assert bye.method == "BYE"
    # Section 12.2.1.1: Request-URI is the remote target, Route the route set, in order.
    assert str(bye.uri) == "sip:bob@198.51.100.7:5062"
    assert hosts(bye.route) == hosts(dialog.route_set)
    assert sipmsg.tag_of(bye.from_address) == "ourtag"
    assert sipmsg.tag_of(bye.to_address) == "theirtag"
    assert bye.call_id == dialog.call_id
    assert (bye.cseq.sequence, bye.cseq.method) == (6, "BYE")
    assert bye.contact == []  # only target-refresh requests carry Contact
    assert bye.headers.getlist("Via") == []  # the transaction layer adds it
    info = dialog.new_request("INFO", body=b"Signal=5\r\n", content_type="application/dtmf-relay")
    assert info.cseq.sequence == 7
    assert info.body == b"Signal=5\r\n"
    assert info.headers["Content-Type"] == "application/dtmf-relay"
    reinvite = dialog.new_request("INVITE", body=b"v=0\r\n", content_type="application/sdp")
    assert reinvite.cseq.sequence == 8
    assert reinvite.contact[0].uri.port == 5070
    assert dialog.new_request("UPDATE").contact[0].uri.port == 5070
    assert dialog.local_cseq == 9


def test_ack_and_cancel_do_not_use_a_new_cseq() -> None:
    dialog = uac_dialog()
    dialog.new_request("INFO")  # CSeq 6
    cancel = dialog.new_request("CANCEL")
    assert (cancel.cseq.sequence, cancel.cseq.method) == (6, "CANCEL")
    # Section 13.2.2.4: the ACK for a 2xx carries the CSeq number of the INVITE it answers.
    ack = dialog.ack(5)
    assert (ack.cseq.sequence, ack.cseq.method) == (5, "ACK")
    assert str(ack.uri) == "sip:bob@198.51.100.7:5062"
    assert hosts(ack.route) == hosts(dialog.route_set)
    assert sipmsg.tag_of(ack.to_address) == "theirtag"
    assert ack.body == b""
    assert dialog.local_cseq == 6
    assert dialog.new_request("BYE").cseq.sequence == 7


def test_uas_dialog_first_request_has_cseq_1() -> None:
    dialog = uas_dialog()
    bye = dialog.new_request("BYE")
    assert bye.cseq.sequence == 1
    assert str(bye.uri) == "sip:carol@198.51.100.7:5062;transport=tcp"
    assert hosts(bye.route) == ["near-uas.example.com", "near-uac.example.com"]
    assert sipmsg.tag_of(bye.from_address) == "gwtag"
    assert sipmsg.tag_of(bye.to_address) == "carol1"
    # The request goes to the nearest proxy first.
    assert dialog.next_hop() == Peer(TransportKind.UDP, "near-uas.example.com", 5060)


def test_next_hop_is_the_first_route() -> None:
    dialog = uac_dialog()
    # Loose routing: the first Route, with its port and transport parameter.
    assert dialog.next_hop() == Peer(TransportKind.TCP, "near-uac.example.com", 5080)


def test_next_hop_without_route_set_is_the_remote_target() -> None:
    dialog = uac_dialog()
    dialog.route_set = ()
    assert dialog.next_hop() == Peer(TransportKind.UDP, "198.51.100.7", 5062)
    # The remote target's transport parameter wins over the dialog's origin.
    dialog = uas_dialog()
    dialog.route_set = ()
    assert dialog.next_hop() == Peer(TransportKind.TCP, "198.51.100.7", 5062)


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sip:host.example.com", Peer(TransportKind.UDP, "host.example.com", 5060)),
        ("sip:u@192.0.2.5:5080", Peer(TransportKind.UDP, "192.0.2.5", 5080)),
        ("sip:u@192.0.2.5;transport=tcp", Peer(TransportKind.TCP, "192.0.2.5", 5060)),
        ("sip:u@192.0.2.5;transport=TCP", Peer(TransportKind.TCP, "192.0.2.5", 5060)),
        ("sip:u@192.0.2.5;transport=udp", Peer(TransportKind.UDP, "192.0.2.5", 5060)),
        ("sip:u@[2001:db8::1]:5070", Peer(TransportKind.UDP, "2001:db8::1", 5070)),
        # A transport we do not have keeps the dialog's own.
        ("sip:u@192.0.2.5;transport=sctp", Peer(TransportKind.UDP, "192.0.2.5", 5060)),
    ],
)
def test_peer_for_uri(uri: str, expected: Peer) -> None:
    assert peer_for_uri(URI.parse(uri), ORIGIN) == expected


def test_peer_for_uri_defaults_to_the_origin_transport() -> None:
    tcp_origin = Peer(TransportKind.TCP, "192.0.2.10", 5060)
    assert peer_for_uri(URI.parse("sip:u@192.0.2.5"), tcp_origin).transport is TransportKind.TCP


def in_dialog(method: str, cseq: int) -> Request:
    request = Request(method=method, uri=URI.parse("sip:gw@192.0.2.1:5070"))
    request.headers.set("CSeq", f"{cseq} {method}")
    return request


def test_accepts_rejects_lower_or_equal_cseq() -> None:
    dialog = uas_dialog()  # remote CSeq 101 from the INVITE
    assert not dialog.accepts(in_dialog("INFO", 100))
    assert not dialog.accepts(in_dialog("INFO", 101))
    assert dialog.remote_cseq == 101
    assert dialog.accepts(in_dialog("INFO", 102))
    assert dialog.remote_cseq == 102
    assert not dialog.accepts(in_dialog("BYE", 102))
    # ACK and CANCEL reuse the CSeq of the request they belong to.
    assert dialog.accepts(in_dialog("ACK", 101))
    assert dialog.accepts(in_dialog("CANCEL", 50))
    assert dialog.remote_cseq == 102
    assert dialog.accepts(in_dialog("BYE", 200))  # gaps are fine (section 12.2.2)
    assert dialog.remote_cseq == 200


def test_accepts_first_request_when_remote_cseq_is_empty() -> None:
    dialog = uac_dialog()
    assert dialog.remote_cseq is None
    assert dialog.accepts(in_dialog("BYE", 1))
    assert dialog.remote_cseq == 1
    assert not dialog.accepts(in_dialog("INFO", 1))


def test_state_history() -> None:
    dialog = uas_dialog()
    dialog.set_state(DialogState.EARLY)
    dialog.set_state(DialogState.CONFIRMED)
    dialog.set_state(DialogState.CONFIRMED)
    dialog.set_state(DialogState.TERMINATED)
    assert dialog.history == [DialogState.EARLY, DialogState.CONFIRMED, DialogState.TERMINATED]
