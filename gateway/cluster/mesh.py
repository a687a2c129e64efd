"""Several gateway workers on one machine, one per core, as one gateway.

Each worker is a whole gateway process (SIP user agent, media, pages) with its own SIP
port and RTP range; the kernel spreads the pages' WebSocket connections over the workers
(SO_REUSEPORT on the one HTTP port). A call's media lives in the worker that owns its SIP
dialog, wherever its page's WebSocket landed: ICE takes the browser straight to that
worker's addresses, so only the JSON signalling has to cross between workers.

This module is that crossing: every worker binds a Unix datagram socket in a private
directory, announces the pages (sessions) it holds, and relays messages between a call in
one worker and a page in another (ops.py says what they are; remote.py holds both ends of
a page and a call on different workers).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gateway.cluster import ops
from gateway.cluster.remote import RemoteCall, RemoteSession
from gateway.config import User
from gateway.signaling import protocol
from gateway.signaling.messages import Registration, Relayed
from gateway.sip.ratelog import RateLimitedLog

if TYPE_CHECKING:
    from gateway.service import Gateway
    from gateway.signaling.session import Session

log = logging.getLogger(__name__)
# Junk on the worker socket (a stray process, a bug) is one line now and then, not a flood.
_bad_message_log = RateLimitedLog(log)

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


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def datagram_received(self, data: bytes, addr: Any) -> None:
        try:
            sender, op = ops.decode(data, self.cluster.spec.count)
        except ValueError as exc:
            _bad_message_log.warning("worker message dropped: %s", exc)
            return
        try:
            self.cluster.receive(sender, op)
        except Exception:
            # A bug must cost one message, not the relay for every other call.
            log.exception("worker message %s from worker %d failed", op.op, sender)

    def error_received(self, exc: Exception) -> None:
        log.debug("worker socket: %s", exc)


class Cluster:
    """This worker's end of the worker mesh."""

    def __init__(self, gateway: Gateway, spec: WorkerSpec) -> None:
        self.gateway = gateway
        self.spec = spec
        self.remote: dict[str, RemoteSession] = {}
        self.registrations: dict[str, Registration] = {}
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
        self.broadcast(ops.Sync())

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

    def send(self, worker: int, op: ops.Op) -> None:
        if self._transport is None:
            return
        data = ops.encode(op, self.index)
        if len(data) > SOCKET_BUFFER:
            log.warning("message to worker %d too large (%d bytes): dropped", worker, len(data))
            return
        self._transport.sendto(data, self.spec.socket_path(worker))

    def broadcast(self, op: ops.Op) -> None:
        for worker in self.others:
            self.send(worker, op)

    # --- what this worker tells the others ------------------------------------------------

    def announce(self, session: Session, to: int | None = None) -> None:
        assert session.user is not None
        op = ops.Announce(session.id, session.user.name)
        if to is None:
            self.broadcast(op)
        else:
            self.send(to, op)

    def withdraw(self, session: Session) -> None:
        self.broadcast(ops.Withdraw(session.id))

    def registration_changed(self, registration: Registration) -> None:
        self.broadcast(ops.RegistrationChanged(registration))

    def sessions_of(self, user: User) -> list[RemoteSession]:
        return [s for s in self.remote.values() if s.user.name == user.name]

    # --- what the others tell this worker -------------------------------------------------

    def receive(self, sender: int, op: ops.Op) -> None:
        if isinstance(op, ops.Sync):
            for session in self.gateway.sessions:
                if session.greeted:
                    self.announce(session, to=sender)
            for name, registration in self.gateway.registrations.items():
                update = Registration.of(name, registration.status)
                self.send(sender, ops.RegistrationChanged(update))
        elif isinstance(op, ops.Announce):
            user = self.gateway.config.user(op.user) or User(name=op.user)
            self.remote[op.session] = RemoteSession(self.gateway, self, op.session, user, sender)
        elif isinstance(op, ops.Withdraw):
            self._spawn(self._gone(op.session))
        elif isinstance(op, ops.RegistrationChanged):
            self.registrations[op.registration.account] = op.registration
            self.gateway.notify_pages(op.registration)
        elif isinstance(op, ops.Request):
            remote = self.remote.get(op.session)
            if remote is not None:
                self._spawn(remote.on_request(op.text))
        else:
            self._to_page(sender, op)

    def _to_page(self, sender: int, op: ops.ToPage) -> None:
        """notify, adopt and release: from a call in `sender` to a page in this worker."""
        session = next((s for s in self.gateway.sessions if s.id == op.session), None)
        if session is None:
            # The page left before the owner heard; let the owner stop ringing it.
            self.send(sender, ops.Withdraw(op.session))
            return
        if isinstance(op, ops.Notify):
            session.notify(Relayed(op.message))
        elif isinstance(op, ops.Adopt):
            session.calls[op.call] = RemoteCall(op.call, sender, self)
        else:
            call = session.calls.get(op.call)
            if isinstance(call, RemoteCall) and call.owner == sender:
                call.active = False
                del session.calls[call.id]

    async def _gone(self, sid: str) -> None:
        remote = self.remote.pop(sid, None)
        if remote is not None:
            await remote.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
