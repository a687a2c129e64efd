"""Several gateway workers on one machine, one per core, as one gateway.

Each worker is a whole gateway process (SIP user agent, media, pages) with its own SIP
port and RTP range; the kernel spreads the pages' WebSocket connections over the workers
(SO_REUSEPORT on the one HTTP port). A call's media lives in the worker that owns its SIP
dialog, wherever its page's WebSocket landed: ICE takes the browser straight to that
worker's addresses, so only the JSON signalling has to cross between workers.

This module is that crossing: every worker binds a Unix datagram socket in a private
directory, announces the pages (sessions) it holds, and relays messages between a call in
one worker and a page in another. A call owner sees a page on another worker as a
`RemoteSession` (it rings, adopts and releases calls like a local page); the page's worker
sees the call as a `RemoteCall` and forwards the page's requests for it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.config import User
from gateway.signaling import protocol
from gateway.signaling.protocol import ProtocolError
from gateway.signaling.session import Session

if TYPE_CHECKING:
    from gateway.service import Gateway

log = logging.getLogger(__name__)

# Forwarded page messages are at most protocol.MAX_MESSAGE_BYTES; JSON escaping can
# double that, and a Unix datagram has to fit the sender's buffer whole.
SOCKET_BUFFER = 2 * protocol.MAX_MESSAGE_BYTES + 65536


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    count: int
    directory: Path

    def socket_path(self, index: int) -> str:
        return str(self.directory / f"worker-{index}.sock")

    @property
    def name(self) -> str:
        return f"worker {self.index + 1}/{self.count}"


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
        self.cluster.send(self.owner, {"op": "request", "session": session.id, "text": raw})

    def leave(self, session: Session) -> None:
        """The page went away; the owner learns it from the session's `gone`."""

    async def close(self, reason: str = "") -> None:
        """Owned by the other worker, which ends it when it hears the page is gone."""


class RemoteSession(Session):
    """A page on another worker, as seen by a call in this one. It rings, adopts and
    releases calls like a local session; what it says goes over the worker socket."""

    def __init__(self, gateway: Gateway, cluster: Cluster, sid: str, user: User, worker: int):
        async def relay(message: dict[str, Any]) -> None:
            cluster.send(worker, {"op": "notify", "session": sid, "message": message})

        super().__init__(gateway, relay, peer=f"worker {worker}", session_id=sid)
        self.user = user
        self.greeted = True
        self.cluster = cluster
        self.worker = worker

    def adopt(self, call: Any) -> None:
        super().adopt(call)
        # Sent at once, so it reaches the page's worker before the queued `incoming`.
        self.cluster.send(self.worker, {"op": "adopt", "session": self.id, "call": call.id})

    def release(self, call: Any) -> None:
        held = self.calls.get(call.id) is call
        super().release(call)
        if held:
            self.cluster.send(self.worker, {"op": "release", "session": self.id, "call": call.id})

    async def _handle(self, message: protocol.ClientMessage) -> None:
        if isinstance(message, (protocol.Hello, protocol.Call)):
            # The page's own worker handles these; only requests for calls come here.
            raise ProtocolError("bad-request", "not a request for a call on this worker")
        await super()._handle(message)


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            message = json.loads(data)
            if not isinstance(message, dict):
                raise ValueError("not an object")
            self.cluster.receive(message)
        except Exception:
            # One bad message must not stop the relay for every other call.
            log.exception("worker message dropped")

    def error_received(self, exc: Exception) -> None:
        log.debug("worker socket: %s", exc)


class Cluster:
    """This worker's end of the worker mesh."""

    def __init__(self, gateway: Gateway, spec: WorkerSpec) -> None:
        self.gateway = gateway
        self.spec = spec
        self.remote: dict[str, RemoteSession] = {}
        self.registrations: dict[str, dict[str, Any]] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def index(self) -> int:
        return self.spec.index

    @property
    def others(self) -> list[int]:
        return [i for i in range(self.spec.count) if i != self.spec.index]

    async def start(self) -> None:
        path = self.spec.socket_path(self.index)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SOCKET_BUFFER)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * SOCKET_BUFFER)
        sock.bind(path)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Endpoint(self), sock=sock)
        self._transport = transport
        self.broadcast({"op": "sync"})

    async def close(self) -> None:
        for sid in list(self.remote):
            await self._gone(sid)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.spec.socket_path(self.index))

    # --- sending ------------------------------------------------------------------------

    def send(self, worker: int, message: dict[str, Any]) -> None:
        if self._transport is None:
            return
        data = json.dumps({**message, "from": self.index}, separators=(",", ":")).encode()
        if len(data) > SOCKET_BUFFER:
            log.warning("message to worker %d too large (%d bytes): dropped", worker, len(data))
            return
        self._transport.sendto(data, self.spec.socket_path(worker))

    def broadcast(self, message: dict[str, Any]) -> None:
        for worker in self.others:
            self.send(worker, message)

    # --- what this worker tells the others ------------------------------------------------

    def announce(self, session: Session, to: int | None = None) -> None:
        assert session.user is not None
        message = {"op": "session", "session": session.id, "user": session.user.name}
        if to is None:
            self.broadcast(message)
        else:
            self.send(to, message)

    def withdraw(self, session: Session) -> None:
        self.broadcast({"op": "gone", "session": session.id})

    def registration_changed(self, entry: dict[str, Any]) -> None:
        self.broadcast({"op": "registration", "entry": entry})

    def sessions_of(self, user: User) -> list[Session]:
        return [s for s in self.remote.values() if s.user is not None and s.user.name == user.name]

    # --- what the others tell this worker -------------------------------------------------

    def receive(self, message: dict[str, Any]) -> None:
        op = message.get("op")
        sender = int(message["from"])
        if op == "sync":
            for session in self.gateway.sessions:
                if session.greeted:
                    self.announce(session, to=sender)
            for name, registration in self.gateway.registrations.items():
                entry = self.gateway.registration_entry(name, registration)
                self.send(sender, {"op": "registration", "entry": entry})
        elif op == "session":
            sid, name = str(message["session"]), str(message["user"])
            user = self.gateway.config.user(name) or User(name=name)
            self.remote[sid] = RemoteSession(self.gateway, self, sid, user, sender)
        elif op == "gone":
            self._spawn(self._gone(str(message["session"])))
        elif op == "registration":
            entry = message["entry"]
            self.registrations[str(entry["account"])] = entry
            self.gateway.notify_pages({"type": "registration", **entry})
        elif op == "request":
            remote = self.remote.get(str(message["session"]))
            if remote is not None:
                self._spawn(remote.on_text(str(message["text"])))
        else:
            self._to_page(sender, message)

    def _to_page(self, sender: int, message: dict[str, Any]) -> None:
        """notify, adopt and release: from a call in `sender` to a page in this worker."""
        sid = str(message["session"])
        session = next((s for s in self.gateway.sessions if s.id == sid), None)
        if session is None:
            # The page left before the owner heard; let the owner stop ringing it.
            self.send(sender, {"op": "gone", "session": sid})
            return
        op = message["op"]
        if op == "notify":
            session.notify(message["message"])
        elif op == "adopt":
            call_id = str(message["call"])
            session.calls[call_id] = RemoteCall(call_id, sender, self)
        elif op == "release":
            call = session.calls.get(str(message["call"]))
            if isinstance(call, RemoteCall) and call.owner == sender:
                call.active = False
                del session.calls[call.id]
        else:
            log.debug("unknown worker message %r from worker %d", op, sender)

    async def _gone(self, sid: str) -> None:
        remote = self.remote.pop(sid, None)
        if remote is not None:
            await remote.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
