"""SIP transaction layer: RFC 3261 section 17 with RFC 6026's Accepted state.

Client transactions own a Future that resolves with the final response or fails with
TransactionTimeout (Timer B / Timer F); they retransmit on doubling timers over UDP.
Server transactions absorb request retransmissions and re-send the last response.
The layer above (the transaction user) sees requests through one callback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from sipmessage import Address, Request, Response, Via

from gateway.sip import local_address
from gateway.sip import message as sipmsg
from gateway.sip.transport import Peer, SipTransport, TransportKind

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timers:
    """RFC 3261 section 17.1.1.1 values; tests inject a small T1."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0

    @property
    def timeout(self) -> float:
        """Timer B, F, H, J, L, M: 64 * T1."""
        return 64 * self.t1


class TransactionState(StrEnum):
    CALLING = "calling"
    TRYING = "trying"
    PROCEEDING = "proceeding"
    ACCEPTED = "accepted"
    COMPLETED = "completed"
    CONFIRMED = "confirmed"
    TERMINATED = "terminated"


class TransactionTimeout(Exception):
    """No final response within 64 * T1 (Timer B or F)."""


ResponseHandler = Callable[[Response], None]


class _Transaction:
    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer) -> None:
        self.layer = layer
        self.request = request
        self.peer = peer
        self.branch = sipmsg.branch_of(request)
        self.state = TransactionState.TERMINATED
        self.history: list[TransactionState] = []
        self._timers: dict[str, asyncio.TimerHandle] = {}

    @property
    def reliable(self) -> bool:
        return self.peer.transport is not TransportKind.UDP

    def _set_state(self, state: TransactionState) -> None:
        if state is self.state and self.history:
            return
        log.debug("%s %s: %s -> %s", self.request.method, self.branch, self.state, state)
        self.state = state
        self.history.append(state)
        if state is TransactionState.TERMINATED:
            self._cancel_timers()
            self.layer._forget(self)

    def _start_timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._stop_timer(name)
        loop = asyncio.get_running_loop()
        self._timers[name] = loop.call_later(delay, callback)

    def _stop_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    def _cancel_timers(self) -> None:
        for handle in self._timers.values():
            handle.cancel()
        self._timers.clear()

    def _send(self, msg: Request | Response) -> None:
        self.layer.transport.send(msg, self.peer)


class ClientTransaction(_Transaction):
    """RFC 3261 sections 17.1.1 (INVITE) and 17.1.2 (non-INVITE)."""

    def __init__(
        self,
        layer: TransactionLayer,
        request: Request,
        peer: Peer,
        on_response: ResponseHandler | None = None,
    ) -> None:
        super().__init__(layer, request, peer)
        self.is_invite = request.method == "INVITE"
        self.on_response = on_response
        self.final: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.provisional_seen = False
        self._interval = layer.timers.t1
        self._ack: Request | None = None
        self._cancel_sent = False

    def start(self) -> None:
        first = TransactionState.CALLING if self.is_invite else TransactionState.TRYING
        self._set_state(first)
        self._send(self.request)
        if not self.reliable:
            self._start_timer("retransmit", self._interval, self._on_retransmit_timer)
        self._start_timer("timeout", self.layer.timers.timeout, self._on_timeout)

    def _on_retransmit_timer(self) -> None:
        """Timer A (INVITE, doubling without cap) or Timer E (capped at T2)."""
        if self.state not in (
            TransactionState.CALLING,
            TransactionState.TRYING,
            TransactionState.PROCEEDING,
        ):
            return
        self._send(self.request)
        if self.is_invite:
            self._interval *= 2
        else:
            # In Proceeding, Timer E fires every T2 (section 17.1.2.2).
            base = (
                self.layer.timers.t2
                if self.state is TransactionState.PROCEEDING
                else self._interval * 2
            )
            self._interval = min(base, self.layer.timers.t2)
        self._start_timer("retransmit", self._interval, self._on_retransmit_timer)

    def _on_timeout(self) -> None:
        if self.state in (TransactionState.COMPLETED, TransactionState.ACCEPTED):
            self._set_state(TransactionState.TERMINATED)
            return
        if not self.final.done():
            self.final.set_exception(
                TransactionTimeout(f"no final response to {self.request.method}")
            )
        self._set_state(TransactionState.TERMINATED)

    def cancel_sent(self) -> None:
        """Section 9.1: with no final response 64*T1 after CANCEL, give the INVITE up."""
        if not self.is_invite or self._cancel_sent:
            return
        self._cancel_sent = True
        if self.state in (TransactionState.CALLING, TransactionState.PROCEEDING):
            self._start_timer("timeout", self.layer.timers.timeout, self._on_timeout)

    def transport_failed(self, reason: str) -> None:
        if self.final.done() or self.state is TransactionState.TERMINATED:
            return
        response = sipmsg.make_response(self.request, 503, reason)
        self._resolve(response)
        self._deliver(response)
        self._set_state(TransactionState.TERMINATED)

    def abort(self) -> None:
        """The transport failed or the owner is shutting down."""
        if not self.final.done():
            self.final.set_exception(TransactionTimeout("transaction aborted"))
        self._set_state(TransactionState.TERMINATED)

    def receive(self, response: Response) -> None:
        code = response.code
        if code < 200:
            if self.state in (
                TransactionState.CALLING,
                TransactionState.TRYING,
                TransactionState.PROCEEDING,
            ):
                self.provisional_seen = True
                if self.is_invite:
                    # Section 17.1.1.2: a provisional response stops Timer A, and Timer B
                    # only runs in Calling: how long a call may ring is the TU's business.
                    self._stop_timer("retransmit")
                    if not self._cancel_sent:
                        self._stop_timer("timeout")
                self._set_state(TransactionState.PROCEEDING)
                self._deliver(response)
            return
        if self.is_invite:
            self._receive_invite_final(response)
        else:
            self._receive_final(response)

    def _receive_invite_final(self, response: Response) -> None:
        if 200 <= response.code < 300:
            if self.state in (
                TransactionState.CALLING,
                TransactionState.PROCEEDING,
                TransactionState.ACCEPTED,
            ):
                # RFC 6026 section 7.2: retransmitted 2xx go to the TU, which re-sends ACK.
                first = self.state is not TransactionState.ACCEPTED
                self._stop_timer("retransmit")
                if first:
                    self._set_state(TransactionState.ACCEPTED)
                    self._start_timer("timeout", self.layer.timers.timeout, self._on_timeout)
                self._resolve(response)
                self._deliver(response)
            return
        if self.state in (TransactionState.CALLING, TransactionState.PROCEEDING):
            self._stop_timer("retransmit")
            self._ack = self._build_ack(response)
            self._send(self._ack)
            self._set_state(TransactionState.COMPLETED)
            # Timer D: wait for retransmissions of the final response on unreliable transports.
            self._start_timer(
                "timeout", 0 if self.reliable else self.layer.timers.timeout, self._on_timeout
            )
            self._resolve(response)
            self._deliver(response)
        elif self.state is TransactionState.COMPLETED and self._ack is not None:
            self._send(self._ack)

    def _receive_final(self, response: Response) -> None:
        if self.state in (TransactionState.TRYING, TransactionState.PROCEEDING):
            self._stop_timer("retransmit")
            self._set_state(TransactionState.COMPLETED)
            # Timer K.
            self._start_timer(
                "timeout", 0 if self.reliable else self.layer.timers.t4, self._on_timeout
            )
            self._resolve(response)
            self._deliver(response)

    def _resolve(self, response: Response) -> None:
        if not self.final.done():
            self.final.set_result(response)

    def _deliver(self, response: Response) -> None:
        if self.on_response is not None:
            try:
                self.on_response(response)
            except Exception:
                log.exception("response handler failed")

    def _build_ack(self, response: Response) -> Request:
        """Section 17.1.1.3: ACK for a non-2xx final response, same branch as the INVITE."""
        ack = Request(method="ACK", uri=self.request.uri)
        ack.headers.set("Via", self.request.headers.getlist("Via")[0])
        ack.headers.set("Max-Forwards", "70")
        routes = self.request.headers.getlist("Route")
        if routes:
            ack.headers.setlist("Route", list(routes))
        ack.headers.set("From", self.request.headers["From"])
        ack.headers.set("To", response.headers["To"])
        ack.headers.set("Call-ID", self.request.headers["Call-ID"])
        ack.headers.set("CSeq", f"{self.request.cseq.sequence} ACK")
        return ack


class ServerTransaction(_Transaction):
    """RFC 3261 sections 17.2.1 (INVITE) and 17.2.2 (non-INVITE)."""

    def __init__(self, layer: TransactionLayer, request: Request, peer: Peer) -> None:
        super().__init__(layer, request, peer)
        self.is_invite = request.method == "INVITE"
        self.last_response: Response | None = None
        self._interval = layer.timers.t1
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.to_tag = sipmsg.new_tag()

    def start(self) -> None:
        if self.is_invite:
            self._set_state(TransactionState.PROCEEDING)
            # Section 17.2.1: answer 100 at once so the client stops retransmitting.
            self.respond(sipmsg.make_response(self.request, 100))
        else:
            self._set_state(TransactionState.TRYING)

    def respond(self, response: Response) -> None:
        if self.state in (
            TransactionState.COMPLETED,
            TransactionState.CONFIRMED,
            TransactionState.TERMINATED,
        ):
            log.debug("late response %d dropped", response.code)
            return
        self.last_response = response
        self._send(response)
        code = response.code
        if code < 200:
            self._set_state(TransactionState.PROCEEDING)
            return
        if self.is_invite and code < 300:
            # RFC 6026 section 8.5: Accepted; the TU retransmits the 2xx until ACK (Timer L).
            self._set_state(TransactionState.ACCEPTED)
            self._start_timer("timeout", self.layer.timers.timeout, self._terminate)
            return
        self._set_state(TransactionState.COMPLETED)
        if self.is_invite:
            if not self.reliable:
                self._start_timer("retransmit", self._interval, self._on_timer_g)
            self._start_timer("timeout", self.layer.timers.timeout, self._on_timer_h)
        else:
            # Timer J.
            self._start_timer(
                "timeout", 0 if self.reliable else self.layer.timers.timeout, self._terminate
            )

    def respond_code(self, code: int, phrase: str | None = None) -> None:
        self.respond(sipmsg.make_response(self.request, code, phrase, to_tag=self.to_tag))

    def _on_timer_g(self) -> None:
        if self.state is not TransactionState.COMPLETED or self.last_response is None:
            return
        self._send(self.last_response)
        self._interval = min(self._interval * 2, self.layer.timers.t2)
        self._start_timer("retransmit", self._interval, self._on_timer_g)

    def _on_timer_h(self) -> None:
        log.info(
            "no ACK for %d to INVITE %s",
            self.last_response.code if self.last_response else 0,
            self.branch,
        )
        self._terminate()

    def _terminate(self) -> None:
        if not self.acked.done():
            self.acked.cancel()
        self._set_state(TransactionState.TERMINATED)

    def receive_retransmission(self, request: Request) -> None:
        if request.method == "ACK":
            if self.state is TransactionState.COMPLETED:
                self._stop_timer("retransmit")
                self._set_state(TransactionState.CONFIRMED)
                if not self.acked.done():
                    self.acked.set_result(None)
                # Timer I.
                self._start_timer(
                    "timeout", 0 if self.reliable else self.layer.timers.t4, self._terminate
                )
            return
        if self.state is TransactionState.ACCEPTED:
            return  # RFC 6026: retransmitted INVITEs are absorbed; the TU resends the 2xx.
        if self.last_response is not None:
            self._send(self.last_response)


RequestHandler = Callable[[Request, Peer, ServerTransaction | None], None]


class TransactionLayer:
    """Matches messages to transactions (section 17.1.3 and 17.2.3) and owns their timers."""

    def __init__(self, transport: SipTransport, timers: Timers) -> None:
        self.timers = timers
        self.transport = transport
        transport.on_message = self._on_message
        transport.on_connect_error = self._on_connect_error
        self.on_request: RequestHandler | None = None
        self.on_stray_response: Callable[[Response, Peer], None] | None = None
        self._clients: dict[tuple[str, str], ClientTransaction] = {}
        self._servers: dict[tuple[str, str], ServerTransaction] = {}

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        for tx in list(self._clients.values()):
            tx.abort()
        for stx in list(self._servers.values()):
            stx._set_state(TransactionState.TERMINATED)
        await self.transport.close()

    @property
    def active(self) -> int:
        return len(self._clients) + len(self._servers)

    def via_for(self, peer: Peer, branch: str | None = None) -> Via:
        return local_address.via_for(self.transport, peer, branch)

    def contact_for(self, user: str | None, peer: Peer, *, sips: bool = False) -> Address:
        """Our Contact for `peer` (see local_address.contact_for for sip: versus sips:)."""
        return local_address.contact_for(self.transport, user, peer, sips=sips)

    def send_request(
        self, request: Request, peer: Peer, on_response: ResponseHandler | None = None
    ) -> ClientTransaction:
        """Add our Via (a fresh branch unless one is set) and start a client transaction."""
        if not request.headers.getlist("Via"):
            request.headers.set("Via", str(self.via_for(peer)))
        tx = ClientTransaction(self, request, peer, on_response)
        self._clients[(tx.branch, request.method)] = tx
        tx.start()
        if request.method == "CANCEL":
            invite = self._clients.get((tx.branch, "INVITE"))
            if invite is not None:
                invite.cancel_sent()
        return tx

    def send_ack(self, ack: Request, peer: Peer) -> None:
        """ACK to a 2xx is its own transaction-less request (section 13.2.2.4)."""
        if not ack.headers.getlist("Via"):
            ack.headers.set("Via", str(self.via_for(peer)))
        self.transport.send(ack, peer)

    def _on_connect_error(self, peer: Peer, exc: Exception) -> None:
        """RFC 3261 section 8.1.3.1: a transport failure counts as a 503 from that peer,
        at once, rather than a time-out 32 s later."""
        for tx in list(self._clients.values()):
            if tx.peer == peer:
                tx.transport_failed(f"Service Unavailable ({type(exc).__name__})")

    def find_client(self, branch: str, method: str) -> ClientTransaction | None:
        return self._clients.get((branch, method))

    def find_server(self, branch: str, method: str) -> ServerTransaction | None:
        return self._servers.get((branch, method))

    def _forget(self, tx: _Transaction) -> None:
        key = (tx.branch, tx.request.method)
        if isinstance(tx, ClientTransaction):
            if self._clients.get(key) is tx:
                del self._clients[key]
        elif self._servers.get(key) is tx:
            del self._servers[key]

    def _on_message(self, msg: Request | Response, peer: Peer) -> None:
        if isinstance(msg, Response):
            key = (sipmsg.branch_of(msg), msg.cseq.method)
            client = self._clients.get(key)
            if client is not None:
                client.receive(msg)
            elif self.on_stray_response is not None:
                self.on_stray_response(msg, peer)
            else:
                log.debug("stray response %d dropped", msg.code)
            return
        branch = sipmsg.branch_of(msg)
        lookup = "INVITE" if msg.method == "ACK" else msg.method
        server = self._servers.get((branch, lookup))
        if server is not None:
            if msg.method != "ACK" or server.state is not TransactionState.ACCEPTED:
                server.receive_retransmission(msg)
                return
        if msg.method == "ACK":
            # An ACK for a 2xx belongs to the dialog, not to a transaction.
            self._dispatch(msg, peer, None)
            return
        stx = ServerTransaction(self, msg, peer)
        self._servers[(branch, msg.method)] = stx
        stx.start()
        self._dispatch(msg, peer, stx)

    def _dispatch(self, request: Request, peer: Peer, tx: ServerTransaction | None) -> None:
        if self.on_request is None:
            if tx is not None:
                tx.respond_code(503)
            return
        try:
            self.on_request(request, peer, tx)
        except Exception:
            # A bug above us must not leave the request unanswered and its transaction
            # waiting for a final response forever (an INVITE's never times out).
            if tx is not None and (tx.last_response is None or tx.last_response.code < 200):
                tx.respond_code(500)
            raise
