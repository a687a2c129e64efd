"""Bad input gets a clear error and loses nothing: malformed SIP and bad WebSocket messages."""

from __future__ import annotations

import asyncio
import socket

import pytest

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
