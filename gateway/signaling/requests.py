"""A page's calls and its requests for them (hangup, accept, reject, candidate, DTMF, hold,
transfer), whichever side of the worker socket the page is on.

Shared by `Session` (a page on this worker) and `RemoteSession` (a page on another worker,
gateway/cluster/), each of which is the `host` the calls see: a call compares sessions by
identity (which page answered), so the host, not this helper, is what they are given.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from gateway.calls.call import CallError
from gateway.signaling import protocol
from gateway.signaling.call_queue import CallQueue
from gateway.signaling.protocol import ProtocolError

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

ReportError = Callable[[str, str, str | None], None]
CallRequest = (
    protocol.Hangup
    | protocol.Accept
    | protocol.Reject
    | protocol.Candidate
    | protocol.Dtmf
    | protocol.Hold
    | protocol.Transfer
)


async def answering_errors(name: str, error: ReportError, request: Awaitable[None]) -> None:
    """Run one page request; what goes wrong is answered to the page with `error`, and the
    socket and the page's other calls go on."""
    try:
        await request
    except ProtocolError as exc:
        log.info("session %s: %s: %s", name, exc.code, exc.message)
        error(exc.code, exc.message, exc.call_id)
    except Exception:
        # A bug must cost one request, not the page's socket and its other calls.
        log.exception("session %s: internal error", name)
        error("internal", "the gateway could not handle this message", None)


class PageHost(Protocol):
    """The page as its calls see it (a `Session` or a `RemoteSession`); calls are given it
    with every request and compare it by identity."""

    def release(self, call: Any) -> None: ...


class PageCalls:
    def __init__(
        self, host: PageHost, gateway: Gateway, name: str, peer: str, error: ReportError
    ) -> None:
        self.host = host
        self.gateway = gateway
        self.name = name
        self.peer = peer
        self.error = error
        self.calls: dict[str, Any] = {}
        # Calls this page owns (made or answered) end with it; ringing ones are only left.
        self.owned: set[str] = set()
        # Per call, the page's requests that wait on the far end (call_queue.py).
        self._queues: dict[str, CallQueue] = {}

    def adopt(self, call: Any) -> None:
        self.calls[call.id] = call

    def release(self, call: Any) -> bool:
        """Forget `call`; whether it was this page's."""
        call_id: str = call.id
        held = self.calls.get(call_id) is call
        if held:
            del self.calls[call_id]
            queue = self._queues.pop(call_id, None)
            if queue is not None:
                queue.abandon()
        self.owned.discard(call_id)
        return held

    def abandon_all(self) -> None:
        for queue in self._queues.values():
            queue.abandon()
        self._queues.clear()

    async def end(self, reason: str) -> None:
        """The page is gone: end the calls it owns (BYE or CANCEL), leave those only
        ringing it."""
        self.abandon_all()
        owned = [c for cid, c in self.calls.items() if cid in self.owned]
        for call_id, call in list(self.calls.items()):
            if call_id not in self.owned:
                call.leave(self.host)  # ringing here only: stop ringing on this page
                self.host.release(call)
        await asyncio.gather(*(c.close(reason) for c in owned), return_exceptions=True)

    async def handle(self, message: CallRequest) -> None:
        call = self.calls.get(message.id)
        if call is None:
            raise ProtocolError("no-such-call", f"no call with id {message.id!r}", message.id)
        try:
            self._request(call, message)
        except CallError as exc:
            raise ProtocolError(exc.code, exc.message, message.id) from None

    def _queue(self, call_id: str) -> CallQueue:
        queue = self._queues.get(call_id)
        if queue is None:

            def on_error(exc: Exception) -> None:
                if isinstance(exc, (ProtocolError, CallError)):
                    self.error(exc.code, exc.message, call_id)
                else:
                    log.error("session %s: internal error", self.name, exc_info=exc)
                    self.error("internal", "the gateway could not handle this message", call_id)

            queue = self._queues[call_id] = CallQueue(f"{self.name}-{call_id}", on_error)
        return queue

    def _request(self, call: Any, message: CallRequest) -> None:
        """Requests that answer at once run here; those that wait on the far end run in
        the call's queue, and `hangup` abandons them before anything else."""
        host = self.host
        if isinstance(message, protocol.Hangup):
            queue = self._queues.get(call.id)
            if queue is not None:
                queue.abandon()
            call.hangup(host)
        elif isinstance(message, protocol.Accept):
            call.accept(host, message.sdp)
            self.owned.add(call.id)
        elif isinstance(message, protocol.Reject):
            call.reject(host, message.code)
        elif isinstance(message, protocol.Candidate):
            call.candidate(host, message.candidate)
        elif isinstance(message, protocol.Dtmf):
            digits = message.digits
            self._queue(call.id).put(lambda: call.send_dtmf(digits))
        elif isinstance(message, protocol.Hold):
            on = message.on
            self._queue(call.id).put(lambda: call.hold(on))
        else:
            try:
                target = self.gateway.transfer_target(message.to, call, self.peer)
            except ValueError as exc:
                raise ProtocolError("bad-number", str(exc), message.id) from None
            to = message.to
            self._queue(call.id).put(lambda: call.transfer(to, target))
