"""One browser connection: the hello, its calls, and one writer for its messages."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.calls.call import Call
from gateway.signaling import protocol
from gateway.signaling.protocol import ProtocolError

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_CALLS_PER_SESSION = 4


class Session:
    def __init__(self, gateway: Gateway, send: Send, *, peer: str = "?") -> None:
        self.gateway = gateway
        self.id = secrets.token_hex(8)
        self.peer = peer
        self.user: str | None = None
        self.greeted = False
        self.calls: dict[str, Call] = {}
        self._send = send
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.id}")

    def notify(self, message: dict[str, Any]) -> None:
        """Queue a message for the page; one writer task keeps them in order."""
        self._outbox.put_nowait(message)

    async def _write(self) -> None:
        while True:
            message = await self._outbox.get()
            try:
                if message is None:
                    return
                await self._send(message)
            except (ConnectionError, RuntimeError) as exc:
                log.debug("session %s: send failed: %s", self.id, exc)
            finally:
                self._outbox.task_done()

    def error(self, code: str, message: str, call_id: str | None = None) -> None:
        reply: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if call_id is not None:
            reply["id"] = call_id
        self.notify(reply)

    async def on_text(self, text: str | bytes) -> None:
        try:
            message = protocol.parse(text)
            await self._handle(message)
        except ProtocolError as exc:
            log.info("session %s: %s: %s", self.id, exc.code, exc.message)
            self.error(exc.code, exc.message, exc.call_id)
        except Exception:
            # A bug must cost one request, not the page's socket and its other calls.
            log.exception("session %s: internal error", self.id)
            self.error("internal", "the gateway could not handle this message")

    async def _handle(self, message: protocol.ClientMessage) -> None:
        if isinstance(message, protocol.Hello):
            self.greeted = True
            self.user = message.user
            self.notify(
                {
                    "type": "welcome",
                    "session": self.id,
                    "iceServers": self.gateway.browser_ice_servers(),
                    "demo": self.gateway.demo_info(),
                }
            )
            return
        if not self.greeted:
            raise ProtocolError("no-session", "send hello first")
        if isinstance(message, protocol.Call):
            self._start_call(message)
            return
        call = self.calls.get(message.id)
        if call is None:
            raise ProtocolError("no-such-call", f"no call with id {message.id!r}", message.id)
        if isinstance(message, protocol.Hangup):
            call.hangup()
        elif isinstance(message, protocol.Dtmf):
            if not await call.send_dtmf(message.digits):
                raise ProtocolError("bad-state", "DTMF needs a connected call", message.id)
        elif isinstance(message, protocol.Candidate):
            # The gateway answers with every candidate in its SDP and expects the page to
            # do the same (the SIP side needs a complete offer); late ones add nothing.
            pass

    def _start_call(self, message: protocol.Call) -> None:
        if message.id in self.calls:
            raise ProtocolError("duplicate-id", f"call id {message.id!r} is in use", message.id)
        active = sum(1 for c in self.calls.values() if c.active)
        if active >= MAX_CALLS_PER_SESSION:
            raise ProtocolError("busy", "too many calls on this session", message.id)
        try:
            route = self.gateway.route(message.to)
        except ValueError as exc:
            raise ProtocolError("bad-number", str(exc), message.id) from None
        call = self.gateway.new_call(message.id, message.to, message.sdp, route, self.notify)
        self.calls[message.id] = call
        call.ended.add_done_callback(lambda _f: self._forget(message.id, call))
        call.start()

    def _forget(self, call_id: str, call: Call) -> None:
        # Keep the id reserved briefly? No: ids are the page's, a new call gets a new one.
        if self.calls.get(call_id) is call:
            del self.calls[call_id]

    async def end_calls(self, reason: str) -> None:
        """End every call (BYE or CANCEL), then let the page read why before anything closes."""
        calls = list(self.calls.values())
        await asyncio.gather(*(c.close(reason) for c in calls), return_exceptions=True)
        if not self._writer.done():
            await asyncio.wait([asyncio.ensure_future(self._outbox.join())], timeout=2)

    async def close(self) -> None:
        """The socket closed or the gateway stops: end every call, then the writer."""
        await self.end_calls("Browser disconnected")
        self._outbox.put_nowait(None)
        await self._writer
