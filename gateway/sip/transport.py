"""SIP transport layer (RFC 3261 section 18): UDP and TCP on one port number, TLS beside.

Messages go up through one callback; they go down through `send(message, peer)`.
A malformed message is answered with 400 when its headers allow it, otherwise
dropped, and in both cases logged: nothing a peer sends can end a reader task.

TLS (RFC 3261 section 26.2) is TCP with a TLS layer: the same stream code (Content-Length
framing, CRLF keep-alive, malformed input, task cleanup) serves both, only the socket
differs. It listens on its own port (`tls_port`) because one port number cannot tell a
TLS ClientHello from a SIP request without peeking.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable, Coroutine
from typing import Any

from sipmessage import Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.ratelog import RateLimitedLog

# Re-exported: these names were defined here before gateway/sip/values.py.
from gateway.sip.values import Peer as Peer
from gateway.sip.values import TlsSettings as TlsSettings
from gateway.sip.values import TransportKind as TransportKind

log = logging.getLogger(__name__)
# One line per bad message, but never a flood of them, and never a traceback.
_bad_input_log = RateLimitedLog(log)

# RFC 5626 section 3.5.1: a client keep-alive ping on a stream is CRLFCRLF, answered by CRLF.
_PING = b"\r\n\r\n"
_MAX_TCP_HEAD = 16_384
# A peer that accepts the TCP connection but never completes TLS must not hold a socket long.
CONNECT_TIMEOUT = 10.0
# How long a TLS close waits for the peer's close_notify (asyncio's default is 30 s).
TLS_SHUTDOWN_TIMEOUT = 2.0


MessageHandler = Callable[[Request | Response, Peer], None]
# Told when a connection to a peer cannot be made (refused, TLS handshake or certificate
# failure), so that the layer above can fail what it sent there (RFC 3261 section 8.1.3.1).
ConnectErrorHandler = Callable[[Peer, Exception], None]
_StreamKey = tuple[TransportKind, str, int]


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
    """One UDP socket and one TCP listener bound to the same host and port number, and a
    TLS listener on `tls_port` when TLS is among the kinds.

    `port` is the UDP/TCP port; with TLS alone it is the TLS port. A fixed `port` puts TLS
    on port + 1 (5060 and 5061, as RFC 3261 section 19.1.2 has them); port 0 puts it on any
    free port.
    """

    def __init__(
        self,
        host: str,
        port: int,
        on_message: MessageHandler | None = None,
        *,
        kinds: tuple[TransportKind, ...] = (TransportKind.UDP, TransportKind.TCP),
        tls: TlsSettings | None = None,
    ) -> None:
        self.host = host
        # What Via and Contact carry: the bind address unless NAT or 0.0.0.0 needs another.
        self.advertised_host = host
        self._requested_port = port
        self.on_message = on_message
        self.on_connect_error: ConnectErrorHandler | None = None
        # Consulted before parsing with (source address, bytes): False drops the message
        # unanswered (the per-source rate limit of gateway/sip/guard.py).
        self.admit: Callable[[str, bytes], bool] | None = None
        self.kinds = kinds
        self.tls = tls
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp_server: asyncio.Server | None = None
        self._tls_server: asyncio.Server | None = None
        self._client_ssl: ssl.SSLContext | None = None
        self._streams: dict[_StreamKey, asyncio.StreamWriter] = {}
        # Messages for a peer whose connection is being made: sent in order once it is up,
        # so a burst (INVITE then CANCEL) opens one connection, not one per message.
        self._connecting: dict[_StreamKey, list[bytes]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.port = 0
        self.tls_port = 0
        # Malformed messages received, answered (400, 416, 505) or dropped.
        self.bad_messages = 0

    @property
    def connections(self) -> list[Peer]:
        """The open stream (TCP and TLS) connections, by the peer at their other end."""
        return [Peer(*key) for key, writer in self._streams.items() if not writer.is_closing()]

    @property
    def busy(self) -> bool:
        """Whether any connection, connection attempt or reader task is still alive."""
        return bool(self._streams or self._connecting or self._tasks)

    async def start(self) -> None:
        server_ssl: ssl.SSLContext | None = None
        if TransportKind.TLS in self.kinds:
            if self.tls is None:
                raise ValueError("TLS transport needs TlsSettings (certificate and key)")
            # Read the files before binding anything: a bad path fails start() cleanly.
            server_ssl = self.tls.server_context()
            self._client_ssl = self.tls.client_context()
        if TransportKind.UDP in self.kinds or TransportKind.TCP in self.kinds:
            await self._start_udp_tcp()
        if server_ssl is not None:
            try:
                await self._start_tls(server_ssl)
            except BaseException:
                await self.close()
                raise
        log.info(
            "SIP listening on %s:%d (%s)%s",
            self.host,
            self.port,
            "/".join(self.kinds),
            f", TLS on {self.tls_port}" if self.tls_port else "",
        )

    async def _start_tls(self, context: ssl.SSLContext) -> None:
        alone = TransportKind.UDP not in self.kinds and TransportKind.TCP not in self.kinds
        if self._requested_port:
            wanted = self._requested_port if alone else self._requested_port + 1
        else:
            wanted = 0
        self._tls_server = await asyncio.start_server(
            self._on_tls_client,
            self.host,
            wanted,
            ssl=context,
            ssl_handshake_timeout=CONNECT_TIMEOUT,
            ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            reuse_address=True,
        )
        self.tls_port = int(self._tls_server.sockets[0].getsockname()[1])
        if alone:
            self.port = self.tls_port

    async def _start_udp_tcp(self) -> None:
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

    async def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        for server in (self._tcp_server, self._tls_server):
            if server is not None:
                server.close()
                await server.wait_closed()
        self._tcp_server = self._tls_server = None
        for writer in list(self._streams.values()):
            writer.close()
        self._streams.clear()
        self._connecting.clear()
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
        key = _key(peer)
        writer = self._streams.get(key)
        if writer is not None and not writer.is_closing():
            writer.write(data)
            return
        pending = self._connecting.get(key)
        if pending is not None:
            pending.append(data)
            return
        self._connecting[key] = [data]
        self._spawn(self._connect_and_send(peer))

    async def _connect_and_send(self, peer: Peer) -> None:
        key = _key(peer)
        try:
            reader, writer = await self._connect(peer)
        except (OSError, ValueError) as exc:
            # OSError covers refused, unreachable, timed out and every ssl.SSLError.
            lost = len(self._connecting.pop(key, []))
            log.warning(
                "%s connect to %s failed (%d message(s) lost): %s",
                peer.transport.value,
                peer,
                lost,
                exc,
            )
            self._connect_failed(peer, exc)
            return
        self._streams[key] = writer
        for data in self._connecting.pop(key, []):
            writer.write(data)
        await self._read_stream(reader, writer, peer)

    async def _connect(self, peer: Peer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if peer.transport is not TransportKind.TLS:
            async with asyncio.timeout(CONNECT_TIMEOUT):
                return await asyncio.open_connection(peer.host, peer.port)
        if self._client_ssl is None:
            raise ValueError("TLS is not enabled on this transport")
        server_name = (self.tls.server_name if self.tls else None) or peer.host
        async with asyncio.timeout(CONNECT_TIMEOUT):
            # Python sends SNI only for names, and checks IP SANs when the name is an address.
            return await asyncio.open_connection(
                peer.host,
                peer.port,
                ssl=self._client_ssl,
                server_hostname=server_name,
                ssl_handshake_timeout=CONNECT_TIMEOUT,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT,
            )

    def _connect_failed(self, peer: Peer, exc: Exception) -> None:
        if self.on_connect_error is None:
            return
        try:
            self.on_connect_error(peer, exc)
        except Exception:
            log.exception("error reporting a failed connection to %s", peer)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- receiving -----------------------------------------------------------

    def _on_bytes(self, data: bytes, peer: Peer) -> None:
        if data.strip(b"\r\n") == b"":
            return  # keep-alive
        if self.admit is not None and not self.admit(peer.host, data):
            return
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
        self.bad_messages += 1
        request = exc.request
        # %r: the reason may quote peer bytes, which must not start a line of their own.
        if request is None or request.method == "ACK":
            _bad_input_log.warning("dropped malformed message from %s: %r", peer, exc.reason)
            return
        _bad_input_log.warning(
            "answered malformed %.32r from %s with %d: %r",
            request.method,
            peer,
            exc.status,
            exc.reason,
        )
        # The reason may carry a library's words about peer bytes: no control characters.
        reason = "".join(c if c.isprintable() else "?" for c in exc.reason)
        phrase = f"{sipmsg.reason_phrase(exc.status)} ({reason})"
        try:
            response = sipmsg.make_response(request, exc.status, phrase, to_tag=sipmsg.new_tag())
            self.send(response, peer)
        except (ValueError, KeyError):
            _bad_input_log.warning("could not even answer %d to %s", exc.status, peer)

    async def _on_tcp_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._serve_stream(TransportKind.TCP, reader, writer)

    async def _on_tls_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Called once the handshake is done; a failed handshake never gets here.
        await self._serve_stream(TransportKind.TLS, reader, writer)

    async def _serve_stream(
        self, kind: TransportKind, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        host, port = writer.get_extra_info("peername")[:2]
        peer = Peer(kind, str(host), int(port))
        self._streams[_key(peer)] = writer
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        try:
            await self._read_stream(reader, writer, peer)
        except asyncio.CancelledError:
            # Only close() cancels this task, and asyncio 3.11's start_server logs a handler
            # task that ends cancelled as an unhandled error (fixed in 3.12): end quietly.
            pass

    async def _read_stream(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: Peer
    ) -> None:
        try:
            while True:
                data = await self._read_framed(reader, writer)
                if data is None:
                    break
                self._on_bytes(data, peer)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            # OSError: a reset, or (TLS) a bad record or an unclean close from the peer.
            log.debug("%s %s closed: %s", peer.transport.value, peer, exc)
        except _FramingError as exc:
            self.bad_messages += 1
            _bad_input_log.warning(
                "closing %s connection with %s: %s", peer.transport.value, peer, exc
            )
        finally:
            key = _key(peer)
            if self._streams.get(key) is writer:
                del self._streams[key]
            writer.close()
            with contextlib.suppress(OSError):
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


def _key(peer: Peer) -> _StreamKey:
    return (peer.transport, peer.host, peer.port)


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
