"""Requests the UA sends inside a dialog, each with a deadline (RFC 3261 sections 12.2.1,
14 and 15), as typed methods: re-INVITE (with 491 glare retry), UPDATE, REFER, NOTIFY,
INFO and BYE.

Every request gets an answer or a failure within 64*T1 of being sent, whatever
provisional responses came: a 100 Trying stops an INVITE's Timer B, so without this
guard (the UAC's own, like a proxy's Timer C) a far end that answers 100 and nothing
more would keep the request, and whoever awaits it, forever. A re-INVITE still pending
at its deadline, or abandoned by its caller, is CANCELled once a provisional response
has come (section 9.1), and every 2xx to it is ACKed, however late.
"""

from __future__ import annotations

import asyncio
import logging
import random
from dataclasses import dataclass, field

from sipmessage import URI, Request, Response

from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.transaction import ClientTransaction, TransactionLayer, TransactionTimeout

log = logging.getLogger(__name__)

SDP = "application/sdp"
GLARE_ATTEMPTS = 3
Headers = tuple[tuple[str, str], ...]

# Seams for tests: a fake clock for the glare wait, a seeded random source.
_sleep = asyncio.sleep
_rng = random.Random()


def glare_wait(dialog: Dialog) -> float:
    """Section 14.1: after a 491 the UAC that owns the Call-ID (it sent the dialog's first
    INVITE) retries after 2.1 to 4 s, the other side after 0 to 2 s, so the two re-INVITEs
    do not cross again."""
    if dialog.owns_call_id:
        return _rng.uniform(2.1, 4.0)
    return _rng.uniform(0.0, 2.0)


def cancel_for(request: Request) -> Request:
    """Section 9.1: CANCEL has the request's Request-URI, top Via, From, To, Call-ID and
    Route, and its CSeq number."""
    cancel = Request(method="CANCEL", uri=request.uri)
    cancel.headers.set("Via", request.headers.getlist("Via")[0])
    cancel.headers.set("Max-Forwards", "70")
    cancel.headers.set("From", request.headers["From"])
    cancel.headers.set("To", request.headers["To"])
    cancel.headers.set("Call-ID", request.call_id)
    cancel.headers.set("CSeq", f"{request.cseq.sequence} CANCEL")
    routes = request.headers.getlist("Route")
    if routes:
        cancel.headers.setlist("Route", list(routes))
    return cancel


def _consume(future: asyncio.Future[Response]) -> None:
    if not future.cancelled():
        future.exception()


@dataclass
class _Pending:
    """One request sent in a dialog, until its final response or its deadline."""

    dialog: Dialog
    request: Request
    abandoned: bool = False
    cancel_sent: bool = False
    tx: ClientTransaction | None = field(default=None, repr=False)

    def on_response(self, layer: TransactionLayer, response: Response) -> None:
        if self.request.method != "INVITE":
            return
        if 200 <= response.code < 300:
            # Every 2xx, first, retransmitted or after we gave up, is ACKed (13.2.2.4).
            dialog = self.dialog
            layer.send_ack(dialog.ack(self.request.cseq.sequence), dialog.next_hop())
        elif response.code < 200 and self.abandoned:
            self.send_cancel(layer)

    def abandon(self, layer: TransactionLayer) -> None:
        self.abandoned = True
        tx = self.tx
        if tx is None or tx.final.done():
            return
        tx.final.add_done_callback(_consume)
        if self.request.method == "INVITE" and tx.provisional_seen:
            self.send_cancel(layer)

    def send_cancel(self, layer: TransactionLayer) -> None:
        if self.cancel_sent:
            return
        self.cancel_sent = True
        tx = layer.send_request(cancel_for(self.request), self.dialog.next_hop())
        # Nobody waits for the CANCEL's own answer: the INVITE's 487 ends it.
        tx.final.add_done_callback(_consume)


class InDialogRequests:
    """The UA's in-dialog requests (a base class of UserAgent)."""

    tl: TransactionLayer
    user_agent: str

    def __init__(self) -> None:
        # Dialogs with a re-INVITE of ours pending: a crossing one gets 491 (section 14.2).
        self._reinviting: set[tuple[str, str]] = set()

    def reinvite_pending(self, dialog: Dialog) -> bool:
        return dialog.key in self._reinviting

    async def send_in_dialog(self, dialog: Dialog, request: Request) -> Response | None:
        """Send `request` in `dialog`; its final response, or None after 64*T1 (a re-INVITE
        is then CANCELled). Cancelling the caller abandons the request the same way."""
        pending = _Pending(dialog, request)
        layer = self.tl
        tx = layer.send_request(
            request, dialog.next_hop(), lambda response: pending.on_response(layer, response)
        )
        pending.tx = tx
        try:
            async with asyncio.timeout(layer.timers.timeout):
                return await asyncio.shield(tx.final)
        except (TimeoutError, TransactionTimeout):
            log.info("%s %s: no final response in time", request.method, dialog.call_id)
            return None
        finally:
            if not tx.final.done():
                pending.abandon(layer)

    async def request_in_dialog(
        self,
        dialog: Dialog,
        method: str,
        body: bytes = b"",
        content_type: str | None = None,
        headers: Headers = (),
    ) -> Response | None:
        request = dialog.new_request(method, body=body, content_type=content_type)
        request.headers.set("User-Agent", self.user_agent)
        for name, value in headers:
            request.headers.set(name, value)
        return await self.send_in_dialog(dialog, request)

    async def reinvite(self, dialog: Dialog, sdp: bytes, headers: Headers = ()) -> Response | None:
        """A re-INVITE carrying our offer; retried after 491 (section 14.1). The final
        response (a 2xx already ACKed), or None when none came in time."""
        response: Response | None = None
        for attempt in range(GLARE_ATTEMPTS):
            self._reinviting.add(dialog.key)
            try:
                response = await self.request_in_dialog(dialog, "INVITE", sdp, SDP, headers)
            finally:
                self._reinviting.discard(dialog.key)
            if response is None or response.code != 491 or attempt == GLARE_ATTEMPTS - 1:
                return response
            if dialog.state is DialogState.TERMINATED:
                return response
            await _sleep(glare_wait(dialog))
        return response

    async def update(self, dialog: Dialog, sdp: bytes, headers: Headers = ()) -> Response | None:
        return await self.request_in_dialog(dialog, "UPDATE", sdp, SDP, headers)

    async def refer(self, dialog: Dialog, target: URI) -> Response | None:
        """RFC 3515: ask the far end to call `target`."""
        headers = (("Refer-To", f"<{target}>"), ("Referred-By", str(dialog.local_address.uri)))
        return await self.request_in_dialog(dialog, "REFER", headers=headers)

    async def notify(
        self, dialog: Dialog, event: str, state: str, body: bytes, content_type: str
    ) -> Response | None:
        """RFC 6665 NOTIFY: `state` is the Subscription-State value."""
        headers = (("Event", event), ("Subscription-State", state))
        return await self.request_in_dialog(dialog, "NOTIFY", body, content_type, headers)

    async def info(self, dialog: Dialog, body: bytes, content_type: str) -> Response | None:
        return await self.request_in_dialog(dialog, "INFO", body, content_type)

    async def bye(self, dialog: Dialog) -> int | None:
        """End a dialog; returns the BYE's final status, or None on time-out."""
        if dialog.state is DialogState.TERMINATED:
            return None
        dialog.set_state(DialogState.TERMINATED)
        self.unregister_dialog(dialog)
        response = await self.request_in_dialog(dialog, "BYE")
        return response.code if response is not None else None

    def unregister_dialog(self, dialog: Dialog) -> None:
        raise NotImplementedError
