"""Bad input gets a clear error and loses nothing: malformed SIP and bad WebSocket messages."""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from typing import Any

import aiohttp
import pytest
import sipmessage.address
import sipmessage.mediatype
import sipmessage.via
from sipmessage import Request

from gateway.service import Gateway
from gateway.sip.transaction import ServerTransaction, Timers
from gateway.sip.transport import Peer
from gateway.sip.ua import UserAgent
from tests.support.gateway import RunningGateway
from tests.support.webrtc_client import WebRtcClient

GOOD_OPTIONS = (
    "OPTIONS sip:600@127.0.0.1 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{branch}\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:probe@127.0.0.1>;tag=abc\r\n"
    "To: <sip:600@127.0.0.1>\r\n"
    "Call-ID: {branch}@127.0.0.1\r\n"
    "CSeq: 1 OPTIONS\r\n"
    "Content-Length: 0\r\n\r\n"
)


def _invite(extra: bytes) -> bytes:
    return (
        b"INVITE sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKi1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:600@127.0.0.1>\r\nCall-ID: i1\r\n"
        b"CSeq: 1 INVITE\r\nMax-Forwards: 70\r\n" + extra + b"Content-Length: 0\r\n\r\n"
    )


MALFORMED: dict[str, tuple[bytes, int | None]] = {
    # name: (datagram, expected status or None when it must be dropped silently)
    "truncated": (b"INVITE sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5", None),
    "no-call-id": (
        b"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx1\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:600@127.0.0.1>\r\nCSeq: 1 OPTIONS\r\n\r\n",
        None,
    ),
    "bad-cseq": (
        b"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx2\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:600@127.0.0.1>\r\nCall-ID: x2\r\n"
        b"CSeq: one OPTIONS\r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    "cseq-method-mismatch": (
        b"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx3\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:600@127.0.0.1>\r\nCall-ID: x3\r\n"
        b"CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
        400,
    ),
    "huge-headers": (
        b"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\n" + b"X-Junk: " + b"A" * 60_000 + b"\r\n\r\n",
        None,
    ),
    "many-headers": (
        b"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\n" + b"X-J: 1\r\n" * 500 + b"\r\n",
        None,
    ),
    "binary-junk": (bytes(range(256)) * 4, None),
    "body-shorter-than-content-length": (
        b"OPTIONS sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKx4\r\n"
        b"From: <sip:a@b>;tag=1\r\nTo: <sip:600@127.0.0.1>\r\nCall-ID: x4\r\n"
        b"CSeq: 1 OPTIONS\r\nContent-Length: 500\r\n\r\nshort",
        400,
    ),
    # Issue 11 item 2: the Contact cannot be a remote target; before, 100 and then nothing.
    "invite-bad-contact": (_invite(b"Contact: <sip:@@>\r\n"), 400),
    "invite-bad-record-route": (_invite(b"Record-Route: <sip:a b>\r\n"), 400),
    # RFC 4475 section 3.1.2.16 (badvers): 505, and 3.3.2 (unkscm): 416.
    "sip-version-7": (
        _invite(b"").replace(b" SIP/2.0\r\n", b" SIP/7.0\r\n", 1).replace(b"SIP/2.0/", b"SIP/7.0/"),
        505,
    ),
    "unknown-uri-scheme": (_invite(b"").replace(b"sip:600@127.0.0.1 ", b"isbn:2983264 ", 1), 416),
    # RFC 4475 section 3.1.2.7 (ltgtruri) and 3.1.2.9 (lwsstart).
    "request-uri-in-brackets": (
        _invite(b"").replace(b"sip:600@127.0.0.1 ", b"<sip:600@127.0.0.1> ", 1),
        400,
    ),
    "request-line-extra-spaces": (_invite(b"").replace(b"INVITE ", b"INVITE  ", 1), 400),
    "bad-to-address": (_invite(b"").replace(b"To: <sip:600@127.0.0.1>", b'To: "x <sip:6@h>'), 400),
}


def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    return sock


async def _recv(sock: socket.socket, timeout: float) -> bytes | None:
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.sock_recv(sock, 65535), timeout)
    except TimeoutError:
        return None


@pytest.mark.parametrize("name", sorted(MALFORMED))
async def test_malformed_sip_is_answered_or_dropped(
    demo_gateway: RunningGateway, name: str
) -> None:
    datagram, expected = MALFORMED[name]
    sip = ("127.0.0.1", demo_gateway.gateway.sip_port)
    with _udp_socket() as sock:
        sock.sendto(datagram, sip)
        reply = await _recv(sock, 0.5)
        if expected is None:
            assert reply is None, f"expected silence, got {reply!r}"
        else:
            assert reply is not None and reply.startswith(f"SIP/2.0 {expected} ".encode()), reply
            assert b";tag=" in reply.split(b"\r\nTo:", 1)[1].split(b"\r\n", 1)[0], reply
        # The stack is still alive: a well-formed OPTIONS from the same socket gets 200.
        port = sock.getsockname()[1]
        sock.sendto(GOOD_OPTIONS.format(port=port, branch=name).encode(), sip)
        reply = await _recv(sock, 2)
        assert reply is not None and reply.startswith(b"SIP/2.0 200 OK"), reply
    assert demo_gateway.gateway.ua.transport.bad_messages >= 1


async def test_malformed_sip_over_tcp_closes_only_that_connection(
    demo_gateway: RunningGateway,
) -> None:
    port = demo_gateway.gateway.sip_port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\n\r\n")  # no Content-Length
    assert await asyncio.wait_for(reader.read(), 2) == b""  # closed by the gateway
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    message = GOOD_OPTIONS.format(port=1, branch="tcp").replace("UDP", "TCP")
    writer.write(message.encode())
    reply = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
    assert reply.startswith(b"SIP/2.0 200 OK")
    writer.close()


async def test_bad_websocket_messages_get_errors_and_socket_stays_open(
    demo_gateway: RunningGateway,
) -> None:
    async with WebRtcClient(demo_gateway.ws_url, tone=1000) as client:
        cases = [
            ("{not json", "bad-json"),
            ("[1, 2]", "bad-message"),
            ('{"no": "type"}', "bad-message"),
            ('{"type": "launch-rockets"}', "unknown-type"),
            ('{"type": "call", "id": "x", "to": "600"}', "bad-message"),
            ('{"type": "hangup", "id": "nope"}', "no-such-call"),
            ('{"type": "dtmf", "id": "x", "digits": "12z"}', "bad-message"),
            ('{"type": "call", "id": "y", "to": "6;0\\u0000", "sdp": "v=0"}', "bad-number"),
        ]
        for text, code in cases:
            await client.send_raw(text)
            error = await client.expect("error")
            assert error["code"] == code, (text, error)
            assert error["message"]
        # Unusable SDP in a call: an error naming the problem, and the call ends.
        await client.send({"type": "call", "id": "bad-sdp", "to": "600", "sdp": "v=0\r\nnonsense"})
        error = await client.expect("error")
        assert (error["code"], error["id"]) == ("bad-sdp", "bad-sdp")
        hangup = await client.expect("hangup")
        assert hangup["id"] == "bad-sdp" and hangup["code"] == 488
        # And the same socket still makes a real call afterwards.
        await client.call("600")
        await client.accept_answer(await client.expect("answer"))
        heard = await client.wait_for_tone(1000)
        assert abs(heard - 1000) < 20


async def test_websocket_closed_mid_call_ends_the_call(demo_gateway: RunningGateway) -> None:
    gateway = demo_gateway.gateway
    async with WebRtcClient(demo_gateway.ws_url) as client:
        await client.call("600")
        await client.accept_answer(await client.expect("answer"))
        assert gateway.ua.dialog_count == 1
    # The socket is gone: the gateway sent BYE and released everything.
    async with asyncio.timeout(5):
        while gateway.ports.in_use or gateway.ua.dialog_count or gateway.demo.ua.dialog_count:  # type: ignore[union-attr]
            await asyncio.sleep(0.05)


@pytest.mark.parametrize("length", [b"-5", b"12\r\nContent-Length: 0", b"abc"])
async def test_tcp_bad_content_length_closes_the_connection(
    demo_gateway: RunningGateway, length: bytes
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", demo_gateway.gateway.sip_port)
    writer.write(
        b"OPTIONS sip:x SIP/2.0\r\nVia: SIP/2.0/TCP h\r\nContent-Length: " + length + b"\r\n\r\n"
    )
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()


def _bad_via_invite(n: int) -> bytes:
    # Each one different and about 1 kB, like the datagrams that filled memory before.
    return (
        f"INVITE sip:600@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP ::bad::{n};branch=z9hG4bK{n}\r\n"
        f"From: <sip:a@b>;tag={n}\r\nTo: <sip:600@127.0.0.1>\r\nCall-ID: flood{n}\r\n"
        f"CSeq: 1 INVITE\r\nX-Pad: {'p' * 900}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


async def _flood(sock: socket.socket, gateway: Gateway, count: int, make: Any) -> None:
    """Send `count` bad datagrams in batches the socket buffers hold, each batch counted."""
    transport = gateway.ua.transport
    sip = ("127.0.0.1", gateway.sip_port)
    start = transport.bad_messages
    for first in range(0, count, 50):
        batch = range(first, min(first + 50, count))
        for n in batch:
            sock.sendto(make(n), sip)
        async with asyncio.timeout(5):
            while transport.bad_messages < start + batch.stop:
                await asyncio.sleep(0.002)


def _library_error_depths() -> list[int]:
    """How many frames each of sipmessage's module-level exception objects holds."""
    depths = []
    for module, name in (
        (sipmessage.via, "VIA_EXCEPTION"),
        (sipmessage.address, "ADDRESS_EXCEPTION"),
        (sipmessage.mediatype, "MEDIATYPE_EXCEPTION"),
    ):
        value = getattr(module, name)
        tb = value.__traceback__ if isinstance(value, BaseException) else None
        depth = 0
        while tb is not None:
            depth, tb = depth + 1, tb.tb_next
        depths.append(depth)
    return depths


async def test_bad_message_flood_leaves_no_trace_in_memory_or_log(
    demo_gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """Issue 11 item 1: 2,000 bad-Via INVITEs (and bad addresses) used to stay in memory
    through the traceback of sipmessage's shared exception objects, and the log grew."""
    gateway = demo_gateway.gateway
    with _udp_socket() as sock:
        await _flood(sock, gateway, 200, _bad_via_invite)  # warm up caches and the log limiter
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            await _flood(sock, gateway, 2000, _bad_via_invite)
            await _flood(
                sock, gateway, 500, lambda n: _invite(f"Contact: <sip:@@{n}>\r\n".encode())
            )
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
        assert _library_error_depths() == [0, 0, 0]
        # Before the fix each datagram kept its ~1 kB and the frames around it: > 2.5 MB.
        assert grown < 500_000, grown
    with _udp_socket() as sock:
        # Still serving: OPTIONS answered at once.
        port = sock.getsockname()[1]
        sock.sendto(GOOD_OPTIONS.format(port=port, branch="after-flood").encode(), sip_of(gateway))
        reply = await _recv(sock, 2)
        assert reply is not None and reply.startswith(b"SIP/2.0 200 OK"), reply
    assert all(record.exc_info is None for record in caplog.records)
    lines = [r for r in caplog.records if r.name == "gateway.sip.transport"]
    # Rate-limited: 2,700 bad messages in a few seconds, a few dozen lines at most.
    assert 1 <= len(lines) <= 100, len(lines)
    assert "suppressed" in "".join(r.getMessage() for r in lines)
    # Counted, and exported.
    async with aiohttp.ClientSession() as http, http.get(demo_gateway.url + "metrics") as response:
        metrics = await response.text()
    count = gateway.ua.transport.bad_messages
    assert count >= 2700
    assert f"sipgw_sip_bad_messages_total {count}\n" in metrics


def sip_of(gateway: Gateway) -> tuple[str, int]:
    return ("127.0.0.1", gateway.sip_port)


async def test_every_invite_gets_a_final_response_and_every_transaction_ends() -> None:
    """Issue 11 item 2: an INVITE with a bad Contact got 100 and then nothing, and its
    transaction stayed forever. Good and bad INVITEs, and a handler that crashes: each one
    gets a final response and the transaction layer is empty after the timers."""
    ua = UserAgent("127.0.0.1", 0, timers=Timers(t1=0.01, t2=0.04, t4=0.05))
    ua.on_invite = lambda incoming: incoming.reject(486)
    await ua.start()
    try:
        with _udp_socket() as sock:
            sip = ("127.0.0.1", ua.port)
            cases = [
                (b"Contact: <sip:@@>\r\n", 400),
                (b"Contact: <sip:a@b>\r\n", 486),
                (b"Contact: <sip:a@b>\r\nRecord-Route: <bad>\r\n", 400),
            ]
            for n, (extra, status) in enumerate(cases):
                invite = _invite(extra).replace(b"z9hG4bKi1", f"z9hG4bKe{n}".encode())
                sock.sendto(invite, sip)
                assert await _final_status(sock) == status, extra
            # A transaction user that raises: 500, and the transaction still ends.
            ua.tl.on_request = _crash
            sock.sendto(_invite(b"").replace(b"z9hG4bKi1", b"z9hG4bKcrash"), sip)
            assert await _final_status(sock) == 500
        # No ACK comes (the peer went away): Timer H ends them all, 64 * T1 = 0.64 s.
        async with asyncio.timeout(3):
            while ua.tl.active:
                await asyncio.sleep(0.02)
    finally:
        await ua.close()


def _crash(request: Request, peer: Peer, tx: ServerTransaction | None) -> None:
    raise RuntimeError("transaction user bug")


async def _final_status(sock: socket.socket) -> int | None:
    while True:
        reply = await _recv(sock, 2)
        if reply is None:
            return None
        status = int(reply.split(b" ", 2)[1])
        if status >= 200:
            return status


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"X-Endless: " + b"a" * 70_000, id="never-ending-header"),
        pytest.param(b"OPTIONS sip:x SIP/2.0\r\nl: 999999999\r\n\r\n", id="huge-content-length"),
        pytest.param(bytes(range(1, 256)) * 20 + b"\r\n\r\n", id="binary-garbage"),
    ],
)
async def test_tcp_garbage_drops_the_connection(demo_gateway: RunningGateway, data: bytes) -> None:
    transport = demo_gateway.gateway.ua.transport
    reader, writer = await asyncio.open_connection("127.0.0.1", demo_gateway.gateway.sip_port)
    writer.write(data)
    assert await asyncio.wait_for(reader.read(), 2) == b""
    writer.close()
    async with asyncio.timeout(2):
        while transport.connections:
            await asyncio.sleep(0.01)
