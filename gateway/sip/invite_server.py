"""The INVITE server session (RFC 3261 section 13.3): ring, answer (the 2xx sent until
its ACK) or reject."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from sipmessage import Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.invite import ALLOW, SDP, DialogOwner, is_sdp
from gateway.sip.transaction import ServerTransaction, TransactionTimeout
from gateway.sip.transport import Peer

if TYPE_CHECKING:
    from gateway.sip.ua import UserAgent

log = logging.getLogger(__name__)


class IncomingInvite:
    """One INVITE server session: ring, answer (2xx retransmitted until ACK) or reject."""

    def __init__(self, ua: UserAgent, request: Request, tx: ServerTransaction, peer: Peer) -> None:
        self.ua = ua
        self.request = request
        self.tx = tx
        self.peer = peer
        self.sdp = request.body if is_sdp(request) else None
        contact = ua.tl.contact_for(
            request.to_address.uri.user, peer, sips=request.uri.scheme == "sips"
        )
        self.dialog = Dialog.from_uas(request, tx.to_tag, peer, contact)
        self.on_cancel: Callable[[], None] | None = None
        self.ack: Request | None = None

    def ring(self, code: int = 180, sdp: bytes | None = None) -> None:
        self.tx.respond(self._response(code, sdp))

    def reject(
        self, code: int, phrase: str | None = None, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        response = self._response(code, None, phrase)
        for name, value in headers:
            response.headers.set(name, value)
        self.tx.respond(response)

    async def accept(
        self, sdp: bytes, owner: DialogOwner, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> Dialog:
        """Send 2xx and retransmit it until the ACK (section 13.3.1.4), Timer L at most."""
        response = self._response(200, sdp)
        for name, value in headers:
            response.headers.set(name, value)
        self.ua.register_dialog(self.dialog, owner)
        self.dialog.set_state(DialogState.CONFIRMED)
        self.ack = await self.ua.answer_invite(self.dialog, self.tx, response)
        if self.ack is None:
            # Section 13.3.1.4: no ACK, so the dialog is confirmed and then ended with BYE.
            await self.ua.bye(self.dialog)
            raise TransactionTimeout("no ACK for 2xx")
        return self.dialog

    def _response(self, code: int, sdp: bytes | None, phrase: str | None = None) -> Response:
        response = sipmsg.make_response(self.request, code, phrase, to_tag=self.tx.to_tag)
        if code < 300 and code > 100:
            response.headers.set("Contact", str(self.dialog.contact))
            response.headers.set("Allow", ALLOW)
            if self.dialog.route_set:
                response.headers.setlist("Record-Route", [str(r) for r in self.dialog.route_set])
        if sdp is not None:
            response.body = sdp
            response.headers.set("Content-Type", SDP)
        return response
