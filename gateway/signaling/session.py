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
from gateway.signaling import messages, protocol
from gateway.signaling.protocol import ProtocolError
from gateway.signaling.requests import PageCalls, answering_errors

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
        # The page's calls and its requests for them (requests.py).
        self.page_calls = PageCalls(self, gateway, self.id, peer, self.error)
        self.calls = self.page_calls.calls
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
        self.notify(messages.Error(code, message, call_id))

    # --- calls ringing here (inbound and browser-to-browser) -------------------------

    def adopt(self, call: Any) -> None:
        self.page_calls.adopt(call)

    def release(self, call: Any) -> None:
        self.page_calls.release(call)

    # --- messages from the page ------------------------------------------------------

    async def on_text(self, text: str | bytes) -> None:
        await answering_errors(self.id, self.error, self._on_text(text))

    async def _on_text(self, text: str | bytes) -> None:
        message = protocol.parse(text)
        if not self._forwarded(message, text):
            await self._handle(message)

    def _forwarded(self, message: protocol.ClientMessage, text: str | bytes) -> bool:
        """A request for a call another worker owns goes there as it came (gateway/cluster/)."""
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
        await self.page_calls.handle(message)

    async def _hello(self, message: protocol.Hello) -> None:
        user = await self.gateway.authenticate(message.user, message.token, self.peer)
        if user is None:
            # The same answer for every cause, locked out included: the guesser learns nothing.
            raise ProtocolError("auth-failed", "unknown user or wrong password")
        self.greeted = True
        self.user = user
        self.gateway.attach(self)
        cluster = self.gateway.cluster
        welcome = messages.Welcome(
            session=self.id,
            user=user.name,
            ice_servers=self.gateway.browser_ice_servers(user),
            demo=self.gateway.demo_info(),
            registrations=self.gateway.registrations_now(),
            extension=user.extension,
            worker=cluster.index if cluster is not None else None,
            relay_only=self.gateway.config.ice_transport_policy == "relay",
        )
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
        self.page_calls.owned.add(message.id)
        call.ended.add_done_callback(lambda _f: self.release(call))
        call.start()

    async def end_calls(self, reason: str) -> None:
        """End the calls this page owns (BYE or CANCEL), leave those only ringing here, then
        let the page read why before anything closes."""
        await self.page_calls.end(reason)
        if not self._writer.done():
            await asyncio.wait([asyncio.ensure_future(self._outbox.join())], timeout=2)

    async def close(self) -> None:
        """The socket closed or the gateway stops: end every call, then the writer."""
        await self.end_calls("Browser disconnected")
        self._outbox.put_nowait(None)
        await self._writer
