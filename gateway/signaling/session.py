"""One browser connection: who it is (hello), its calls, and one writer for its messages."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from gateway.calls.call import CallError
from gateway.calls.page import PageMessage
from gateway.config import User
from gateway.signaling import protocol
from gateway.signaling.call_queue import CallQueue
from gateway.signaling.protocol import ProtocolError

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

Send = Callable[[dict[str, Any]], Awaitable[None]]
MAX_CALLS_PER_SESSION = 4


class Session:
    def __init__(
        self, gateway: Gateway, send: Send, *, peer: str = "?", session_id: str | None = None
    ) -> None:
        self.gateway = gateway
        self.id = session_id or secrets.token_hex(8)
        self.peer = peer
        self.user: User | None = None
        self.greeted = False
        self.calls: dict[str, Any] = {}
        # Calls this session owns (made or answered) end with it; ringing ones are only left.
        self._owned: set[str] = set()
        # Per call, the page's requests that wait on the far end (call_queue.py).
        self._queues: dict[str, CallQueue] = {}
        self._send = send
        self._outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        self._writer = asyncio.create_task(self._write(), name=f"ws-writer-{self.id}")

    def notify(self, message: PageMessage | dict[str, Any]) -> None:
        """Queue a message for the page; one writer task keeps them in order."""
        self._outbox.put_nowait(message if isinstance(message, dict) else message.to_json())

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

    # --- calls ringing here (inbound and browser-to-browser) -------------------------

    def adopt(self, call: Any) -> None:
        self.calls[call.id] = call

    def release(self, call: Any) -> None:
        call_id: str = call.id
        if self.calls.get(call_id) is call:
            del self.calls[call_id]
            queue = self._queues.pop(call_id, None)
            if queue is not None:
                queue.abandon()
        self._owned.discard(call_id)

    # --- messages from the page ------------------------------------------------------

    async def on_text(self, text: str | bytes) -> None:
        try:
            message = protocol.parse(text)
            if self._forwarded(message, text):
                return
            await self._handle(message)
        except ProtocolError as exc:
            log.info("session %s: %s: %s", self.id, exc.code, exc.message)
            self.error(exc.code, exc.message, exc.call_id)
        except Exception:
            # A bug must cost one request, not the page's socket and its other calls.
            log.exception("session %s: internal error", self.id)
            self.error("internal", "the gateway could not handle this message")

    def _forwarded(self, message: protocol.ClientMessage, text: str | bytes) -> bool:
        """A request for a call another worker owns goes there as it came (cluster.py)."""
        if isinstance(message, (protocol.Hello, protocol.Call)) or not self.greeted:
            return False
        forward = getattr(self.calls.get(message.id), "forward", None)
        if forward is None:
            return False
        forward(self, text)
        return True

    async def _handle(self, message: protocol.ClientMessage) -> None:
        if isinstance(message, protocol.Hello):
            await self._hello(message)
            return
        if not self.greeted:
            raise ProtocolError("no-session", "send hello (with valid credentials) first")
        if isinstance(message, protocol.Call):
            self._start_call(message)
            return
        call = self.calls.get(message.id)
        if call is None:
            raise ProtocolError("no-such-call", f"no call with id {message.id!r}", message.id)
        try:
            await self._call_request(call, message)
        except CallError as exc:
            raise ProtocolError(exc.code, exc.message, message.id) from None

    def _queue(self, call_id: str) -> CallQueue:
        queue = self._queues.get(call_id)
        if queue is None:

            def on_error(exc: Exception) -> None:
                if isinstance(exc, (ProtocolError, CallError)):
                    self.error(exc.code, exc.message, call_id)
                else:
                    log.error("session %s: internal error", self.id, exc_info=exc)
                    self.error("internal", "the gateway could not handle this message", call_id)

            queue = self._queues[call_id] = CallQueue(f"{self.id}-{call_id}", on_error)
        return queue

    async def _call_request(self, call: Any, message: protocol.ClientMessage) -> None:
        """Requests that answer at once run here; those that wait on the far end run in
        the call's queue, and `hangup` abandons them before anything else."""
        if isinstance(message, protocol.Hangup):
            queue = self._queues.get(call.id)
            if queue is not None:
                queue.abandon()
            call.hangup(self)
        elif isinstance(message, protocol.Accept):
            call.accept(self, message.sdp)
            self._owned.add(call.id)
        elif isinstance(message, protocol.Reject):
            call.reject(self, message.code)
        elif isinstance(message, protocol.Candidate):
            call.candidate(self, message.candidate)
        elif isinstance(message, protocol.Dtmf):
            digits = message.digits
            self._queue(call.id).put(lambda: call.send_dtmf(digits))
        elif isinstance(message, protocol.Hold):
            on = message.on
            self._queue(call.id).put(lambda: call.hold(on))
        elif isinstance(message, protocol.Transfer):
            try:
                target = self.gateway.transfer_target(message.to, call, self.peer)
            except ValueError as exc:
                raise ProtocolError("bad-number", str(exc), message.id) from None
            to = message.to
            self._queue(call.id).put(lambda: call.transfer(to, target))

    async def _hello(self, message: protocol.Hello) -> None:
        user = await self.gateway.authenticate(message.user, message.token, self.peer)
        if user is None:
            # The same answer for every cause, locked out included: the guesser learns nothing.
            raise ProtocolError("auth-failed", "unknown user or wrong password")
        self.greeted = True
        self.user = user
        self.gateway.attach(self)
        welcome: dict[str, Any] = {
            "type": "welcome",
            "session": self.id,
            "iceServers": self.gateway.browser_ice_servers(user),
            "demo": self.gateway.demo_info(),
            "user": user.name,
            "registrations": self.gateway.registration_states(),
        }
        if user.extension:
            welcome["extension"] = user.extension
        if self.gateway.cluster is not None:
            welcome["worker"] = self.gateway.cluster.index
        if self.gateway.config.ice_transport_policy == "relay":
            welcome["iceTransportPolicy"] = "relay"
        self.notify(welcome)

    def _start_call(self, message: protocol.Call) -> None:
        if message.id in self.calls:
            raise ProtocolError("duplicate-id", f"call id {message.id!r} is in use", message.id)
        active = sum(1 for c in self.calls.values() if c.active)
        if active >= MAX_CALLS_PER_SESSION:
            raise ProtocolError("busy", "too many calls on this session", message.id)
        try:
            call = self.gateway.place_call(self, message.id, message.to, message.sdp)
        except ValueError as exc:
            raise ProtocolError("bad-number", str(exc), message.id) from None
        except CallError as exc:  # not-allowed: the dialling policy or a call cap
            raise ProtocolError(exc.code, exc.message, message.id) from None
        self.calls[message.id] = call
        self._owned.add(message.id)
        call.ended.add_done_callback(lambda _f: self.release(call))
        call.start()

    async def end_calls(self, reason: str) -> None:
        """End the calls this page owns (BYE or CANCEL), leave those only ringing here, then
        let the page read why before anything closes."""
        for queue in self._queues.values():
            queue.abandon()
        self._queues.clear()
        owned = [c for cid, c in self.calls.items() if cid in self._owned]
        for call_id, call in list(self.calls.items()):
            if call_id not in self._owned:
                call.leave(self)  # ringing here only: stop ringing on this page
                self.release(call)
        await asyncio.gather(*(c.close(reason) for c in owned), return_exceptions=True)
        if not self._writer.done():
            await asyncio.wait([asyncio.ensure_future(self._outbox.join())], timeout=2)

    async def close(self) -> None:
        """The socket closed or the gateway stops: end every call, then the writer."""
        await self.end_calls("Browser disconnected")
        self._outbox.put_nowait(None)
        await self._writer
