"""SIP transport layer (RFC 3261 section 18): UDP and TCP on one port number.

Messages go up through one callback; they go down through `send(message, peer)`.
A malformed message is answered with 400 when its headers allow it, otherwise
dropped, and in both cases logged: nothing a peer sends can end a reader task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sipmessage import Request, Response

from gateway.sip import message as sipmsg

log = logging.getLogger(__name__)

# RFC 5626 section 3.5.1: a client keep-alive ping on a stream is CRLFCRLF, answered by CRLF.
_PING = b"\r\n\r\n"
_MAX_TCP_HEAD = 16_384


class TransportKind(StrEnum):
    UDP = "UDP"
    TCP = "TCP"


@dataclass(frozen=True)
class Peer:
    """Where a message came from, and so where its answer goes (symmetric, like rport)."""

    transport: TransportKind
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.transport.lower()}:{self.host}:{self.port}"


MessageHandler = Callable[[Request | Response, Peer], None]


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, layer: SipTransport) -> None:
        self._layer = layer

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        host, port = str(addr[0]), int(str(addr[1]))
        self._layer._on_bytes(data, Peer(TransportKind.UDP, host, port))

    def error_received(self, exc: Exception) -> None:
        # An ICMP port unreachable from a peer that went away; the transaction times out.
        log.debug("UDP error: %s", exc)


class SipTransport:
    """One UDP socket and one TCP listener bound to the same host and port number."""

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler | None = None,
        *,
        kinds: tuple[TransportKind, ...] = (TransportKind.UDP, TransportKind.TCP),
    ) -> None:
        self.host = host
        # What Via and Contact carry: the bind address unless NAT or 0.0.0.0 needs another.
        self.advertised_host = host
        self._requested_port = port
        self.on_message = on_message
        self.kinds = kinds
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._streams: dict[tuple[str, int], asyncio.StreamWriter] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.dropped = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        for _attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, self._requested_port)
            )
            port = int(udp.get_extra_info("sockname")[1])
            if TransportKind.TCP not in self.kinds:
                break
            try:
                self._tcp_server = await asyncio.start_server(
                    self._on_tcp_client, self.host, port, reuse_address=True
                )
                break
            except OSError:
                udp.close()
                if self._requested_port:
                    raise
        else:
            raise OSError("no port free for both UDP and TCP")
        self._udp = udp
        self.port = port
        log.info("SIP listening on %s:%d (%s)", self.host, port, "/".join(self.kinds))

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp_server is not None:
            self._tcp_server.close()
            await self._tcp_server.wait_closed()
            self._tcp_server = None
        for writer in list(self._streams.values()):
            writer.close()
        self._streams.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    # --- sending -------------------------------------------------------------

    def send(self, message: Request | Response, peer: Peer) -> None:
        data = sipmsg.serialize(message)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("send to %s:\n%s", peer, data.decode(errors="replace"))
        if peer.transport is TransportKind.UDP:
            if self._udp is not None:
                self._udp.sendto(data, (peer.host, peer.port))
            return
        writer = self._streams.get((peer.host, peer.port))
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        self._spawn(self._connect_and_send(peer, data))

    async def _connect_and_send(self, peer: Peer, data: bytes) -> None:
        try:
            reader, writer = await asyncio.open_connection(peer.host, peer.port)
        except OSError as exc:
            log.warning("TCP connect to %s failed: %s", peer, exc)
            return
        self._streams[(peer.host, peer.port)] = writer
        writer.write(data)
        await self._read_stream(reader, writer, peer)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- receiving -----------------------------------------------------------

    def _on_bytes(self, data: bytes, peer: Peer) -> None:
        if data.strip(b"\r\n") == b"":
            return  # keep-alive
        try:
            message = sipmsg.parse(data)
        except sipmsg.SipParseError as exc:
            self._reject(exc, peer)
            return
        if self.on_message is None:
            return
        try:
            self.on_message(message, peer)
        except Exception:
            # A bug above us must not stop the socket from serving the next message.
            log.exception("error handling message from %s", peer)

    def _reject(self, exc: sipmsg.SipParseError, peer: Peer) -> None:
        self.dropped += 1
        request = exc.request
        if request is None or request.method == "ACK":
            log.warning("dropped malformed message from %s: %s", peer, exc.reason)
            return
        log.warning("answered malformed %s from %s with 400: %s", request.method, peer, exc.reason)
        try:
            self.send(sipmsg.make_response(request, 400, f"Bad Request ({exc.reason})"), peer)
        except (ValueError, KeyError):
            log.warning("could not even answer 400 to %s", peer)

    async def _on_tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer(TransportKind.TCP, str(host), int(port))
        self._streams[(peer.host, peer.port)] = writer
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        await self._read_stream(reader, writer, peer)

    async def _read_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        try:
            while True:
                data = await self._read_framed(reader, writer)
                if data is None:
                    break
                self._on_bytes(data, peer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            log.debug("TCP %s closed: %s", peer, exc)
        except _FramingError as exc:
            log.warning("closing TCP connection from %s: %s", peer, exc)
        finally:
            if self._streams.get((peer.host, peer.port)) is writer:
                del self._streams[(peer.host, peer.port)]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _read_framed(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bytes | None:
        """One message from a stream, framed by Content-Length (RFC 3261 section 18.3)."""
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError as exc:
                if exc.partial.strip(b"\r\n"):
                    raise _FramingError("stream ended inside a message") from None
                return None
            except asyncio.LimitOverrunError:
                raise _FramingError("header block too large") from None
            if head == _PING or head.strip(b"\r\n") == b"":
                if head == _PING:
                    writer.write(b"\r\n")
                continue
            break
        if len(head) > _MAX_TCP_HEAD:
            raise _FramingError("header block too large")
        length = _content_length(head)
        if length is None:
            # RFC 3261 section 18.3: mandatory on streams, or the next message cannot be found.
            raise _FramingError("no single valid Content-Length on a stream transport")
        if length > sipmsg.MAX_MESSAGE_SIZE:
            raise _FramingError("Content-Length too large")
        body = await reader.readexactly(length) if length else b""
        return head + body


class _FramingError(Exception):
    pass


def _content_length(head: bytes) -> int | None:
    """The one Content-Length of a header block; None when absent, unreadable or repeated,
    since a stream whose framing is in doubt cannot be trusted for the next message."""
    found: list[bytes] = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip().lower() in (b"content-length", b"l"):
            found.append(value.strip())
    if len(found) != 1 or not found[0].isdigit():
        return None
    return int(found[0])
