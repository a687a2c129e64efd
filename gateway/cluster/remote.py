"""Both ends of a page and a call on different workers.

A call's worker sees the page as a `RemoteSession`: it rings, adopts and releases calls
like a local `Session` (the same `PageCalls` handles the page's requests), but it is not
one: what it says goes over the worker socket. The page's worker sees the call as a
`RemoteCall` and forwards the page's requests for it unchanged.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from gateway.calls.page import PageMessage
from gateway.cluster import ops
from gateway.config import User
from gateway.signaling import messages, protocol
from gateway.signaling.protocol import ProtocolError
from gateway.signaling.requests import PageCalls, answering_errors

if TYPE_CHECKING:
    from gateway.cluster.mesh import Cluster
    from gateway.service import Gateway
    from gateway.signaling.session import Session

log = logging.getLogger(__name__)


class RemoteCall:
    """A call owned by another worker, as the page's own session sees it: every request
    from the page for it goes to the owner as is, to be handled there."""

    def __init__(self, call_id: str, owner: int, cluster: Cluster) -> None:
        self.id = call_id
        self.owner = owner
        self.cluster = cluster
        self.active = True

    def forward(self, session: Session, text: str | bytes) -> None:
        raw = text.decode(errors="replace") if isinstance(text, bytes) else text
        self.cluster.send(self.owner, ops.Request(session.id, raw))

    def leave(self, session: Session) -> None:
        """The page went away; the owner learns it from the session's `gone`."""

    async def close(self, reason: str = "") -> None:
        """Owned by the other worker, which ends it when it hears the page is gone."""


class RemoteSession:
    """A page on another worker, as seen by a call in this one."""

    def __init__(
        self, gateway: Gateway, cluster: Cluster, sid: str, user: User, worker: int
    ) -> None:
        self.id = sid
        self.user = user
        self.greeted = True
        self.peer = f"worker {worker}"
        self.cluster = cluster
        self.worker = worker
        self.page_calls = PageCalls(self, gateway, sid, self.peer, self.error)
        self.calls = self.page_calls.calls

    def notify(self, message: PageMessage | dict[str, Any]) -> None:
        data = message if isinstance(message, dict) else message.to_json()
        # On the next loop turn, as a local session's writer task would send it, so that
        # an `adopt` sent now reaches the page's worker before the `incoming` it goes with.
        asyncio.get_running_loop().call_soon(
            self.cluster.send, self.worker, ops.Notify(self.id, data)
        )

    def error(self, code: str, message: str, call_id: str | None = None) -> None:
        self.notify(messages.Error(code, message, call_id))

    def adopt(self, call: Any) -> None:
        self.page_calls.adopt(call)
        self.cluster.send(self.worker, ops.Adopt(self.id, call.id))

    def release(self, call: Any) -> None:
        if self.page_calls.release(call):
            self.cluster.send(self.worker, ops.Release(self.id, call.id))

    async def on_request(self, text: str) -> None:
        """The page's request for a call here, forwarded by its worker."""
        await answering_errors(self.id, self.error, self._request(text))

    async def _request(self, text: str) -> None:
        message = protocol.parse(text)
        if isinstance(message, (protocol.Hello, protocol.Call)):
            # The page's own worker handles these; only requests for calls come here.
            raise ProtocolError("bad-request", "not a request for a call on this worker")
        await self.page_calls.handle(message)

    async def close(self) -> None:
        """The page is gone from its worker: end the calls it owns, leave the others."""
        await self.page_calls.end("Browser disconnected")
