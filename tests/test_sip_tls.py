"""SIP over TLS (RFC 3261 section 26.2, RFC 5630): two user agents on 127.0.0.1.

Each test makes a throwaway CA and a certificate for 127.0.0.1 with `cryptography`,
then runs the real stack (transport, transactions, user agent) over real TLS sockets.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from sipmessage import URI, Address, Request

from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.transaction import ServerTransaction, Timers, TransactionTimeout
from gateway.sip.transport import Peer, SipTransport, TlsSettings, TransportKind
from gateway.sip.ua import Answered, Failed, IncomingInvite, InviteState, UserAgent
from gateway.sip.values import peer_for_uri
from tests.support.audio import write_tone_wav
from tests.support.baresip import BaresipPhone, baresip_available
from tests.support.ports import free_tcp_udp_port, port_is_free

HOST = "127.0.0.1"
TIMERS = Timers(t1=0.02)
# Timer F and B at 64 * T1 = 0.64 s: a failed connection is seen as a time-out quickly.
FAST_TIMERS = Timers(t1=0.01)
SDP = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
)


# --- a throwaway PKI ------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    ca: Path
    cert: Path
    key: Path
    other_ca: Path  # a CA that signed nothing we use: verification against it must fail


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _make_ca(common_name: str) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_leaf(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("sipgw test 127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(HOST)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = _make_ca("sipgw test CA")
    leaf_key, leaf_cert = _make_leaf(ca_key, ca_cert)
    _other_key, other_cert = _make_ca("somebody else's CA")
    pki = Pki(
        ca=directory / "ca.pem",
        cert=directory / "cert.pem",
        key=directory / "key.pem",
        other_ca=directory / "other-ca.pem",
    )
    pki.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    pki.cert.write_bytes(leaf_cert.public_bytes(serialization.Encoding.PEM))
    pki.key.write_bytes(_pem_key(leaf_key))
    pki.other_ca.write_bytes(other_cert.public_bytes(serialization.Encoding.PEM))
    # baresip wants its certificate and key in one file.
    (directory / "bundle.pem").write_bytes(pki.cert.read_bytes() + pki.key.read_bytes())
    return pki


def settings(pki: Pki, **changes: Any) -> TlsSettings:
    values: dict[str, Any] = {"certfile": pki.cert, "keyfile": pki.key, "cafile": pki.ca}
    values.update(changes)
    return TlsSettings(**values)


# --- user agents ------------------------------------------------------------------------


@dataclass
class Seen:
    """Requests a UA received, with the peer (transport and address) they came from."""

    requests: list[tuple[Request, Peer]] = field(default_factory=list)

    def methods(self) -> list[str]:
        return [request.method for request, _ in self.requests]


def record_requests(ua: UserAgent) -> Seen:
    seen = Seen()
    handler = ua.tl.on_request
    assert handler is not None

    def on_request(request: Request, peer: Peer, tx: ServerTransaction | None) -> None:
        seen.requests.append((request, peer))
        handler(request, peer, tx)

    ua.tl.on_request = on_request
    return seen


@asynccontextmanager
async def tls_ua(
    tls: TlsSettings,
    timers: Timers = TIMERS,
    kinds: tuple[TransportKind, ...] = (TransportKind.TLS,),
) -> AsyncIterator[UserAgent]:
    ua = UserAgent(HOST, 0, timers=timers, kinds=kinds)
    # UserAgent has no TLS argument yet: the settings go onto its transport before start().
    ua.transport.tls = tls
    await ua.start()
    try:
        yield ua
    finally:
        await ua.close()


def tls_peer(ua: UserAgent) -> Peer:
    return Peer(TransportKind.TLS, HOST, ua.transport.tls_port)


def options_to(sender: UserAgent, receiver: UserAgent | int) -> Request:
    """An OPTIONS for a UA's TLS port, or for a bare port number."""
    port = receiver if isinstance(receiver, int) else receiver.transport.tls_port
    uri = URI(scheme="sips", user="bob", host=HOST, port=port)
    peer = Peer(TransportKind.TLS, HOST, port)
    return sipmsg.build_request(
        sipmsg.RequestSpec(
            method="OPTIONS",
            uri=uri,
            from_address=sipmsg.with_tag(
                Address(uri=URI(scheme="sips", user="alice", host=HOST)), "a1"
            ),
            to_address=Address(uri=uri),
            call_id=sipmsg.new_call_id(HOST),
            cseq=1,
            contact=sender.tl.contact_for("alice", peer),
        )
    )


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


class Owner:
    """A DialogOwner that remembers how its dialog ended."""

    def __init__(self) -> None:
        self.bye = asyncio.Event()

    def on_bye(self, dialog: Dialog) -> None:
        self.bye.set()

    def on_in_dialog_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        tx.respond_code(200)

    def on_ack(self, dialog: Dialog, ack: Request) -> None:
        pass  # no re-INVITEs in these tests


def answer_every_call(ua: UserAgent, owner: Owner) -> list[Dialog]:
    dialogs: list[Dialog] = []

    async def answer(incoming: IncomingInvite) -> None:
        incoming.ring()
        dialogs.append(await incoming.accept(SDP, owner))

    ua.on_invite = lambda incoming: ua.spawn(answer(incoming))
    return dialogs


def invite(caller: UserAgent, callee: UserAgent) -> Any:
    target = URI(scheme="sips", user="bob", host=HOST, port=callee.transport.tls_port)
    return caller.invite(
        target=target,
        peer=peer_for_uri(target, Peer(TransportKind.UDP, HOST, 5060)),
        from_address=Address(uri=URI(scheme="sips", user="alice", host=HOST)),
        to_address=Address(uri=target),
        sdp=SDP,
        credentials=None,
    )


# --- URIs, Via and Contact ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sips:bob@example.com", Peer(TransportKind.TLS, "example.com", 5061)),
        ("sips:bob@example.com:5071", Peer(TransportKind.TLS, "example.com", 5071)),
        # RFC 5630 section 3.1.3: in a sips: URI transport=tcp is the layer under TLS.
        ("sips:bob@example.com;transport=tcp", Peer(TransportKind.TLS, "example.com", 5061)),
        ("sip:bob@example.com;transport=tls", Peer(TransportKind.TLS, "example.com", 5061)),
        ("sip:bob@[2001:db8::1];transport=TLS", Peer(TransportKind.TLS, "2001:db8::1", 5061)),
        ("sip:bob@example.com;transport=tcp", Peer(TransportKind.TCP, "example.com", 5060)),
        ("sip:bob@example.com", Peer(TransportKind.UDP, "example.com", 5060)),
    ],
)
def test_peer_for_uri(uri: str, expected: Peer) -> None:
    assert peer_for_uri(URI.parse(uri), Peer(TransportKind.UDP, "origin", 5060)) == expected


def test_sip_uri_inherits_a_tls_dialogs_transport_and_port() -> None:
    origin = Peer(TransportKind.TLS, "origin", 5061)
    assert peer_for_uri(URI.parse("sip:proxy.example.com;lr"), origin) == Peer(
        TransportKind.TLS, "proxy.example.com", 5061
    )


async def test_via_and_contact_over_tls_name_the_tls_port(pki: Pki) -> None:
    async with tls_ua(
        settings(pki), kinds=(TransportKind.UDP, TransportKind.TCP, TransportKind.TLS)
    ) as ua:
        tls_port, port = ua.transport.tls_port, ua.transport.port
        assert tls_port and tls_port != port
        peer = Peer(TransportKind.TLS, "198.51.100.7", 5061)
        assert str(ua.tl.via_for(peer, "z9hG4bKabc")).startswith(
            f"SIP/2.0/TLS {HOST}:{tls_port};branch=z9hG4bKabc"
        )
        assert str(ua.tl.contact_for("alice", peer)) == (
            f"<sip:alice@{HOST}:{tls_port};transport=tls>"
        )
        # RFC 3261 section 8.1.1.8: a sips: Request-URI needs a sips: Contact.
        secure = ua.tl.contact_for("alice", peer, sips=True)
        assert str(secure) == f"<sips:alice@{HOST}:{tls_port}>"
        assert peer_for_uri(secure.uri, Peer(TransportKind.UDP, HOST, 1)) == tls_peer(ua)
        # The other transports keep the shared UDP/TCP port.
        tcp = Peer(TransportKind.TCP, "198.51.100.7", 5060)
        assert str(ua.tl.contact_for("alice", tcp)) == f"<sip:alice@{HOST}:{port};transport=tcp>"
        assert str(ua.tl.via_for(tcp, "z9hG4bKabc")).startswith(f"SIP/2.0/TCP {HOST}:{port};")


# --- ports --------------------------------------------------------------------------------


async def test_fixed_sip_port_puts_tls_on_the_next_port(pki: Pki) -> None:
    for _attempt in range(5):
        port = free_tcp_udp_port(HOST)
        if port >= 65535 or not port_is_free(port + 1, HOST, udp=False):
            continue
        transport = SipTransport(
            HOST,
            port,
            kinds=(TransportKind.UDP, TransportKind.TCP, TransportKind.TLS),
            tls=settings(pki),
        )
        try:
            await transport.start()
        except OSError:
            continue  # someone took the port between the check and the bind
        try:
            assert (transport.port, transport.tls_port) == (port, port + 1)
        finally:
            await transport.close()
        return
    pytest.fail("no free port pair for UDP/TCP and TLS")


async def test_tls_alone_listens_on_one_port(pki: Pki) -> None:
    transport = SipTransport(HOST, 0, kinds=(TransportKind.TLS,), tls=settings(pki))
    await transport.start()
    try:
        assert transport.port == transport.tls_port != 0
    finally:
        await transport.close()


async def test_tls_without_settings_or_with_a_missing_certificate_fails_start(
    pki: Pki, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="TlsSettings"):
        await SipTransport(HOST, 0, kinds=(TransportKind.TLS,)).start()
    missing = SipTransport(
        HOST,
        0,
        kinds=(TransportKind.UDP, TransportKind.TLS),
        tls=settings(pki, certfile=tmp_path / "nope.pem"),
    )
    with pytest.raises(OSError):
        await missing.start()
    assert not missing.busy and missing.port == 0


# --- requests and calls over TLS ------------------------------------------------------------


async def test_options_over_tls_reuse_one_connection(pki: Pki) -> None:
    async with tls_ua(settings(pki)) as alice, tls_ua(settings(pki)) as bob:
        seen = record_requests(bob)
        for _ in range(3):
            request = options_to(alice, bob)
            response = await alice.tl.send_request(request, tls_peer(bob)).final
            assert response.code == 200
            assert "OPTIONS" in (response.headers.get("Allow") or "")
        # One connection, opened by alice to bob's TLS port, carried all three both ways.
        assert alice.transport.connections == [tls_peer(bob)]
        assert len(bob.transport.connections) == 1
        assert seen.methods() == ["OPTIONS"] * 3
        received, came_from = seen.requests[0]
        assert came_from.transport is TransportKind.TLS
        assert came_from == bob.transport.connections[0]
        assert str(received.headers.getlist("Via")[0]).startswith(
            f"SIP/2.0/TLS {HOST}:{alice.transport.tls_port};"
        )


async def test_messages_sent_while_connecting_share_one_connection(pki: Pki) -> None:
    async with tls_ua(settings(pki)) as alice, tls_ua(settings(pki)) as bob:
        seen = record_requests(bob)
        txs = [alice.tl.send_request(options_to(alice, bob), tls_peer(bob)) for _ in range(4)]
        responses = await asyncio.gather(*(tx.final for tx in txs))
        assert [r.code for r in responses] == [200] * 4
        assert len(seen.requests) == 4
        assert len({peer for _, peer in seen.requests}) == 1
        assert len(bob.transport.connections) == 1


@pytest.mark.parametrize("hangs_up", ["caller", "callee"])
async def test_invite_200_ack_bye_over_tls(pki: Pki, hangs_up: str) -> None:
    async with tls_ua(settings(pki)) as alice, tls_ua(settings(pki)) as bob:
        seen_by_bob, seen_by_alice = record_requests(bob), record_requests(alice)
        bob_owner = Owner()
        bob_dialogs = answer_every_call(bob, bob_owner)
        call = invite(alice, bob)
        outcome = await asyncio.wait_for(call.run(), 5)
        assert isinstance(outcome, Answered), outcome
        assert outcome.sdp == SDP
        assert call.history == [InviteState.CALLING, InviteState.PROCEEDING, InviteState.ANSWERED]
        await until(lambda: bool(bob_dialogs))  # accept() returns once the ACK is in

        alice_dialog, bob_dialog = outcome.dialog, bob_dialogs[0]
        alice_owner = Owner()
        alice.register_dialog(alice_dialog, alice_owner)  # what a Call does with its dialog
        # Each side reaches the other at its Contact, the TLS port; a sips: Request-URI
        # asks for a sips: Contact (RFC 3261 section 8.1.1.8).
        bob_port, alice_port = bob.transport.tls_port, alice.transport.tls_port
        scheme = call.target.scheme
        contact = "sips:{}@{}:{}" if scheme == "sips" else "sip:{}@{}:{};transport=tls"
        assert str(alice_dialog.remote_target) == contact.format("bob", HOST, bob_port)
        assert str(bob_dialog.remote_target) == contact.format("alice", HOST, alice_port)
        assert alice_dialog.next_hop() == tls_peer(bob)
        assert bob_dialog.next_hop() == tls_peer(alice)

        if hangs_up == "caller":
            assert await alice.bye(alice_dialog) == 200
            await asyncio.wait_for(bob_owner.bye.wait(), 5)
            assert bob_dialog.history == [DialogState.CONFIRMED, DialogState.TERMINATED]
            assert seen_by_bob.methods() == ["INVITE", "ACK", "BYE"]
        else:
            assert await bob.bye(bob_dialog) == 200
            assert alice_owner.bye.is_set()
            assert alice_dialog.history == [DialogState.CONFIRMED, DialogState.TERMINATED]
            assert seen_by_alice.methods() == ["BYE"]
            assert seen_by_bob.methods() == ["INVITE", "ACK"]
            # bob's BYE went over a connection bob opened to alice's TLS listener.
            assert tls_peer(alice) in bob.transport.connections
            assert seen_by_alice.requests[0][1].transport is TransportKind.TLS
        assert all(peer.transport is TransportKind.TLS for _, peer in seen_by_bob.requests)
        assert alice.dialog_count == bob.dialog_count == 0
        await until(lambda: alice.tl.active == bob.tl.active == 0)


# --- failures ---------------------------------------------------------------------------------


@dataclass
class LoopErrors:
    contexts: list[dict[str, Any]] = field(default_factory=list)


@asynccontextmanager
async def no_unhandled_errors() -> AsyncIterator[LoopErrors]:
    """Fails the test if asyncio reports an exception nobody handled (a task's, a callback's)."""
    loop = asyncio.get_running_loop()
    errors = LoopErrors()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.contexts.append(context))
    try:
        yield errors
    finally:
        loop.set_exception_handler(previous)
    assert errors.contexts == []


@pytest.mark.parametrize(
    ("case", "changes"),
    [
        ("unknown CA", {"cafile": "other_ca"}),
        ("wrong name", {"server_name": "sip.example.com"}),
    ],
)
async def test_unverifiable_server_fails_the_transaction_cleanly(
    pki: Pki, case: str, changes: dict[str, str]
) -> None:
    resolved = {k: getattr(pki, v) if k == "cafile" else v for k, v in changes.items()}
    async with no_unhandled_errors():
        async with (
            tls_ua(settings(pki, **resolved), FAST_TIMERS) as alice,
            tls_ua(settings(pki)) as bob,
        ):
            seen = record_requests(bob)
            errors: list[tuple[Peer, Exception]] = []
            alice.transport.on_connect_error = lambda peer, exc: errors.append((peer, exc))

            tx = alice.tl.send_request(options_to(alice, bob), tls_peer(bob))
            with pytest.raises(TransactionTimeout):
                await asyncio.wait_for(tx.final, 5)
            # The transport said why, at once, rather than only by the transaction's time-out.
            assert [peer for peer, _ in errors] == [tls_peer(bob)]
            assert isinstance(errors[0][1], ssl.SSLCertVerificationError), errors

            outcome = await asyncio.wait_for(invite(alice, bob).run(), 5)
            assert outcome == Failed(408, "Request Timeout")
            assert len(errors) == 2

            # Nothing reached bob, nothing is left open or running on either side.
            assert seen.requests == []
            await until(lambda: not alice.transport.busy and not bob.transport.busy)
            assert alice.transport.connections == bob.transport.connections == []
            assert alice.tl.active == 0


async def test_verification_can_be_turned_off(pki: Pki) -> None:
    lax = settings(pki, cafile=pki.other_ca, verify_peer=False)
    async with tls_ua(lax) as alice, tls_ua(settings(pki)) as bob:
        response = await alice.tl.send_request(options_to(alice, bob), tls_peer(bob)).final
        assert response.code == 200


async def test_unreachable_tls_peer_is_reported(pki: Pki) -> None:
    async with no_unhandled_errors(), tls_ua(settings(pki), FAST_TIMERS) as alice:
        errors: list[Exception] = []
        alice.transport.on_connect_error = lambda _peer, exc: errors.append(exc)
        closed = SipTransport(HOST, 0, kinds=(TransportKind.TLS,), tls=settings(pki))
        await closed.start()
        port = closed.tls_port
        await closed.close()  # nothing listens there now
        tx = alice.tl.send_request(options_to(alice, alice), Peer(TransportKind.TLS, HOST, port))
        with pytest.raises(TransactionTimeout):
            await tx.final
        assert len(errors) == 1 and isinstance(errors[0], ConnectionRefusedError)
        await until(lambda: not alice.transport.busy)


# --- malformed input on a TLS connection --------------------------------------------------------

GOOD_OPTIONS = (
    "OPTIONS sips:bob@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/TLS 127.0.0.1:9;branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sips:probe@127.0.0.1>;tag=abc\r\n"
    "To: <sips:bob@127.0.0.1>\r\n"
    "Call-ID: {branch}@127.0.0.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


@asynccontextmanager
async def raw_tls(
    pki: Pki, port: int
) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    context = ssl.create_default_context(cafile=str(pki.ca))
    reader, writer = await asyncio.open_connection(HOST, port, ssl=context)
    try:
        yield reader, writer
    finally:
        writer.close()
        # The server may already have closed: its close_notify or a reset is fine here.
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def read_response(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)


async def test_malformed_data_over_tls_closes_only_that_connection(pki: Pki) -> None:
    async with tls_ua(settings(pki)) as alice, tls_ua(settings(pki)) as bob:
        # A healthy connection from alice to bob first.
        first = await alice.tl.send_request(options_to(alice, bob), tls_peer(bob)).final
        assert first.code == 200
        healthy = bob.transport.connections
        assert len(healthy) == 1

        async with raw_tls(pki, bob.transport.tls_port) as (reader, writer):
            # CRLFCRLF keep-alive is answered with CRLF (RFC 5626 section 3.5.1).
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), 5) == b"\r\n"
            # Framed but unparseable: 400 on the same connection, which stays open.
            writer.write(GOOD_OPTIONS.format(branch="bad").replace("CSeq: 1", "CSeq: one").encode())
            assert (await read_response(reader)).startswith(b"SIP/2.0 400 ")
            writer.write(GOOD_OPTIONS.format(branch="good").encode())
            assert (await read_response(reader)).startswith(b"SIP/2.0 200 OK")
            # No Content-Length: the stream cannot be framed any more, so it is closed.
            writer.write(b"OPTIONS sips:x SIP/2.0\r\nVia: SIP/2.0/TLS h\r\n\r\n")
            assert await asyncio.wait_for(reader.read(), 5) == b""
        assert bob.transport.bad_messages == 2  # the 400 and the unframeable message

        # Plain text (no TLS at all) on the TLS port: the handshake fails, nothing else does.
        reader, writer = await asyncio.open_connection(HOST, bob.transport.tls_port)
        writer.write(GOOD_OPTIONS.format(branch="plain").encode())
        assert await asyncio.wait_for(reader.read(), 5) == b""
        writer.close()
        await writer.wait_closed()

        # alice's connection was never disturbed, and still carries requests.
        assert bob.transport.connections == healthy
        again = await alice.tl.send_request(options_to(alice, bob), tls_peer(bob)).final
        assert again.code == 200
        assert bob.transport.connections == healthy


async def test_a_closed_connection_is_forgotten_and_dialled_again(pki: Pki) -> None:
    async with tls_ua(settings(pki)) as alice:
        async with tls_ua(settings(pki)) as bob:
            port = bob.transport.tls_port
            assert (
                await alice.tl.send_request(options_to(alice, bob), tls_peer(bob)).final
            ).code == 200
        # bob went away: alice notices the close and forgets the connection.
        await until(lambda: alice.transport.connections == [])
        # Someone listens on that port again: alice connects anew for the next request.
        reborn = SipTransport(HOST, port, kinds=(TransportKind.TLS,), tls=settings(pki))
        received: list[Peer] = []

        def answer(message: Request | object, peer: Peer) -> None:
            if isinstance(message, Request):
                received.append(peer)
                reborn.send(sipmsg.make_response(message, 200), peer)

        reborn.on_message = answer
        await reborn.start()
        try:
            peer = Peer(TransportKind.TLS, HOST, port)
            response = await alice.tl.send_request(options_to(alice, port), peer).final
            assert response.code == 200
            assert [p.transport for p in received] == [TransportKind.TLS]
            assert alice.transport.connections == [peer]
        finally:
            await reborn.close()


# --- a real TLS SIP peer: baresip 1.0 (libre) ------------------------------------------------


class TlsBaresipPhone(BaresipPhone):
    """baresip with SIP over TLS: `sip_listen P` also listens for TLS on TCP P+1."""

    def __init__(self, pki: Pki, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pki = pki

    @property
    def tls_port(self) -> int:
        return self.sip_port + 1

    def _config(self, ctrl_port: int) -> str:
        bundle = self.pki.cert.parent / "bundle.pem"
        return super()._config(ctrl_port) + f"sip_certificate {bundle}\nsip_cafile {self.pki.ca}\n"


@pytest.mark.baresip
@pytest.mark.skipif(not baresip_available(), reason="baresip not installed (baresip-core)")
async def test_call_to_baresip_over_tls(pki: Pki, tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "tone.wav", 440, 30, sample_rate=8000)
    async with TlsBaresipPhone(pki, tone_wav=wav) as phone, tls_ua(settings(pki)) as alice:
        target = URI.parse(f"sips:demo@{HOST}:{phone.tls_port}")
        call = alice.invite(
            target=target,
            peer=peer_for_uri(target, Peer(TransportKind.UDP, HOST, 5060)),
            from_address=Address(uri=URI(scheme="sips", user="alice", host=HOST)),
            to_address=Address(uri=target),
            sdp=SDP,
            credentials=None,
        )
        outcome = await asyncio.wait_for(call.run(), 10)
        assert isinstance(outcome, Answered), outcome
        assert b"PCMU" in outcome.sdp
        established = await phone.wait_event("CALL_ESTABLISHED", timeout=5)
        assert established["direction"] == "incoming"
        # baresip's Contact names its TLS listener the deprecated way; we honour it.
        remote = outcome.dialog.remote_target
        assert (remote.scheme, remote.parameters.get("transport")) == ("sip", "tls")
        assert outcome.dialog.next_hop() == Peer(TransportKind.TLS, HOST, phone.tls_port)

        assert await alice.bye(outcome.dialog) == 200
        closed = await phone.wait_event("CALL_CLOSED", timeout=5)
        assert closed["id"] == established["id"]
        # INVITE, ACK and BYE all went over the one connection alice opened.
        assert alice.transport.connections == [Peer(TransportKind.TLS, HOST, phone.tls_port)]


@pytest.mark.baresip
@pytest.mark.skipif(not baresip_available(), reason="baresip not installed (baresip-core)")
async def test_call_from_baresip_over_tls(pki: Pki, tmp_path: Path) -> None:
    wav = write_tone_wav(tmp_path / "tone.wav", 440, 30, sample_rate=8000)
    async with TlsBaresipPhone(pki, tone_wav=wav) as phone, tls_ua(settings(pki)) as bob:
        seen = record_requests(bob)
        owner = Owner()
        dialogs = answer_every_call(bob, owner)
        # baresip 1.0's dial puts "sip:" before a "sips:" URI, so TLS is asked for by parameter.
        await phone.dial(f"sip:bob@{HOST}:{bob.transport.tls_port};transport=tls")
        established = await phone.wait_event("CALL_ESTABLISHED", timeout=5)
        assert established["direction"] == "outgoing"
        await until(lambda: bool(dialogs))  # baresip's ACK reached us

        await phone.hangup()
        await asyncio.wait_for(owner.bye.wait(), 5)
        await phone.wait_event("CALL_CLOSED", timeout=5)
        assert seen.methods() == ["INVITE", "ACK", "BYE"]
        # All three came over TLS on one connection, the one baresip opened.
        peers = {peer for _, peer in seen.requests}
        assert len(peers) == 1 and next(iter(peers)).transport is TransportKind.TLS
        invite_request = seen.requests[0][0]
        assert str(invite_request.headers.getlist("Via")[0]).startswith("SIP/2.0/TLS ")
