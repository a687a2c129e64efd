"""SIP user agent core: dialogs and their owners, requests from the network, OPTIONS.

The INVITE sessions are gateway/sip/invite_client.py and invite_server.py.

The UA is the transaction user (RFC 3261 section 8): it builds requests, retries them
with credentials after 401/407, creates dialogs, sends ACK for 2xx and CANCEL while
ringing, and routes in-dialog requests to whoever owns the dialog.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable

from sipmessage import Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.indialog import InDialogRequests

# Re-exported: the INVITE sessions lived here before invite_client.py and invite_server.py.
from gateway.sip.invite import ALLOW as ALLOW
from gateway.sip.invite import SDP as SDP
from gateway.sip.invite import DialogOwner as DialogOwner
from gateway.sip.invite_client import Answered as Answered
from gateway.sip.invite_client import Failed as Failed
from gateway.sip.invite_client import InviteOutcome as InviteOutcome
from gateway.sip.invite_client import InviteState as InviteState
from gateway.sip.invite_client import OutgoingInvite as OutgoingInvite
from gateway.sip.invite_client import Provisional as Provisional
from gateway.sip.invite_client import Redirect as Redirect
from gateway.sip.invite_server import IncomingInvite as IncomingInvite
from gateway.sip.transaction import (
    ServerTransaction,
    Timers,
    TransactionLayer,
)
from gateway.sip.transport import Peer, SipTransport, TlsSettings, TransportKind
from gateway.sip.uas2xx import send_2xx_until_ack

log = logging.getLogger(__name__)


# --- the user agent ---------------------------------------------------------------


class UserAgent(InDialogRequests):
    def __init__(
        self,
        host: str,
        port: int,
        *,
        timers: Timers | None = None,
        user_agent: str = "sipgw",
        kinds: tuple[TransportKind, ...] = (TransportKind.UDP, TransportKind.TCP),
        advertised_host: str | None = None,
        tls: TlsSettings | None = None,
    ) -> None:
        super().__init__()
        self.transport = SipTransport(host, port, kinds=kinds, tls=tls)
        if advertised_host:
            self.transport.advertised_host = advertised_host
        self.tl = TransactionLayer(self.transport, timers or Timers())
        self.tl.on_request = self._on_request
        self.tl.on_stray_response = self._on_stray_response
        self.user_agent = user_agent
        self.on_invite: Callable[[IncomingInvite], None] | None = None
        # Consulted for each new out-of-dialog request (gateway/sip/guard.py): False means
        # it refused and answered the request.
        self.screen: Callable[[Request, Peer, ServerTransaction], bool] | None = None
        self._dialogs: dict[tuple[str, str], DialogOwner] = {}
        self._dialog_objects: dict[tuple[str, str], Dialog] = {}
        # 2xx to INVITEs awaiting their ACK, by dialog and CSeq number.
        self._ack_waiters: dict[tuple[str, str, int], asyncio.Future[Request]] = {}
        self._incoming: dict[str, IncomingInvite] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        return self.transport.port

    async def start(self) -> None:
        await self.tl.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.tl.close()

    def spawn(self, coro: object) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)  # type: ignore[call-overload]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def dialog_count(self) -> int:
        return len(self._dialogs)

    def register_dialog(self, dialog: Dialog, owner: DialogOwner) -> None:
        self._dialogs[dialog.key] = owner
        self._dialog_objects[dialog.key] = dialog

    def unregister_dialog(self, dialog: Dialog) -> None:
        self._dialogs.pop(dialog.key, None)
        self._dialog_objects.pop(dialog.key, None)
        for key in [k for k in self._ack_waiters if k[:2] == dialog.key]:
            self._ack_waiters.pop(key).cancel()

    async def answer_invite(
        self, dialog: Dialog, tx: ServerTransaction, response: Response
    ) -> Request | None:
        """Send a 2xx to an INVITE or re-INVITE of `dialog` until its ACK (uas2xx.py):
        the ACK, or None after 64*T1 without one. The caller ends the dialog then."""
        key = (*dialog.key, response.cseq.sequence)
        acked: asyncio.Future[Request] = asyncio.get_running_loop().create_future()
        self._ack_waiters[key] = acked
        try:
            return await send_2xx_until_ack(tx, response, acked)
        finally:
            if self._ack_waiters.get(key) is acked:
                del self._ack_waiters[key]

    def invite(self, **kwargs: object) -> OutgoingInvite:
        return OutgoingInvite(self, **kwargs)  # type: ignore[arg-type]

    # --- requests from the network ----------------------------------------------

    def _on_request(self, request: Request, peer: Peer, tx: ServerTransaction | None) -> None:
        to_tag = sipmsg.tag_of(request.to_address)
        if to_tag is not None:
            self._on_in_dialog(request, peer, tx, to_tag)
            return
        if tx is None:
            return  # ACK outside any dialog: nothing to do (section 17.2.3)
        if self.screen is not None and not self.screen(request, peer, tx):
            return
        if request.method == "INVITE":
            self._on_invite(request, peer, tx)
        elif request.method == "CANCEL":
            self._on_cancel(request, tx)
        elif request.method == "OPTIONS":
            response = sipmsg.make_response(request, 200, to_tag=tx.to_tag)
            response.headers.set("Allow", ALLOW)
            response.headers.set("Accept", SDP)
            tx.respond(response)
        elif request.method == "BYE":
            tx.respond_code(481)
        else:
            response = sipmsg.make_response(request, 405, to_tag=tx.to_tag)
            response.headers.set("Allow", ALLOW)
            tx.respond(response)

    def _on_invite(self, request: Request, peer: Peer, tx: ServerTransaction) -> None:
        if self.on_invite is None:
            tx.respond_code(480)
            return
        incoming = IncomingInvite(self, request, tx, peer)
        branch = sipmsg.branch_of(request)
        self._incoming[branch] = incoming
        tx.acked.add_done_callback(lambda _f: self._incoming.pop(branch, None))

        def forget(_: object) -> None:
            self._incoming.pop(branch, None)

        try:
            self.on_invite(incoming)
        except Exception:
            log.exception("INVITE handler failed")
            tx.respond_code(500)
        asyncio.get_running_loop().call_later(self.tl.timers.timeout * 2, forget, None)

    def _on_cancel(self, request: Request, tx: ServerTransaction) -> None:
        """Section 9.2: 200 to the CANCEL, then 487 to the INVITE if it is still pending."""
        incoming = self._incoming.get(sipmsg.branch_of(request))
        if incoming is None:
            tx.respond_code(481)
            return
        tx.respond(sipmsg.make_response(request, 200, to_tag=incoming.tx.to_tag))
        if incoming.tx.last_response is None or incoming.tx.last_response.code < 200:
            incoming.reject(487)
            if incoming.on_cancel is not None:
                incoming.on_cancel()

    def _on_in_dialog(
        self, request: Request, peer: Peer, tx: ServerTransaction | None, to_tag: str
    ) -> None:
        key = (request.call_id, to_tag)
        owner = self._dialogs.get(key)
        dialog = self._dialog_objects.get(key)
        if request.method == "ACK":
            waiter = self._ack_waiters.pop((*key, request.cseq.sequence), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(request)
            elif owner is not None and dialog is not None:
                owner.on_ack(dialog, request)
            return
        if tx is None:
            return
        if owner is None or dialog is None:
            tx.respond_code(481)
            return
        if not dialog.accepts(request):
            tx.respond_code(500, "Out of order CSeq")
            return
        if request.method == "BYE":
            tx.respond_code(200)
            dialog.set_state(DialogState.TERMINATED)
            self.unregister_dialog(dialog)
            owner.on_bye(dialog)
            return
        if request.method == "INVITE" and self.reinvite_pending(dialog):
            tx.respond_code(491)  # glare: both sides re-INVITE at once (section 14.2)
            return
        owner.on_in_dialog_request(dialog, request, tx)

    def _on_stray_response(self, response: Response, peer: Peer) -> None:
        # A 2xx retransmitted after the INVITE transaction ended: ACK it again if ours.
        if response.cseq.method != "INVITE" or not 200 <= response.code < 300:
            return
        key = (response.call_id, sipmsg.tag_of(response.from_address) or "")
        dialog = self._dialog_objects.get(key)
        if dialog is None:
            return
        tag = sipmsg.tag_of(response.to_address) or ""
        if tag != dialog.remote_tag:  # another fork's 2xx: ACK it with its own To tag
            contacts = response.contact
            dialog = dataclasses.replace(
                dialog,
                remote_tag=tag,
                remote_address=response.to_address,
                remote_target=contacts[0].uri if contacts else dialog.remote_target,
            )
        self.tl.send_ack(dialog.ack(response.cseq.sequence), dialog.next_hop())
