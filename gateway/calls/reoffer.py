"""The far end's re-INVITE or UPDATE in a call: hold, resume, a new address, a codec
change or a session refresh. Our 2xx to a re-INVITE goes again until the ACK (the UA's
`answer_invite`, RFC 3261 section 13.3.1.4); none in 64*T1 ends the call."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sipmessage import Request, Response

import sdp
from gateway.calls.events import CallEnded
from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction

if TYPE_CHECKING:
    from gateway.calls.call import Call

log = logging.getLogger(__name__)
SDP = "application/sdp"


def on_offer_request(call: Call, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
    """re-INVITE or UPDATE: hold, resume, new address, codec change or session refresh."""
    call._session_refreshed()
    call._take_session_timer(request, we_are_uac=False)
    response = sipmsg.make_response(request, 200, to_tag=dialog.local_tag)
    response.headers.set("Contact", str(dialog.contact))
    expires = call._session_expires_header()
    if expires:
        response.headers.set("Session-Expires", expires)
        response.headers.set("Require", "timer")
    if not request.body:
        if request.method == "INVITE":
            # Late offer in a re-INVITE: we offer in the 2xx, the ACK answers.
            call._pending_offer = call.media.full_offer(call.media.codec)
            response.body = call._pending_offer.sdp.encode()
            response.headers.set("Content-Type", SDP)
        respond_offer(call, dialog, tx, response)
        return
    try:
        answer = call.media.answer(request.body.decode(errors="replace"), hold=call.held_local)
    except sdp.SdpError as exc:
        log.info("%sunusable re-offer: %s", call.prefix, exc)
        tx.respond_code(488, "Not Acceptable Here")
        return
    response.body = answer.encode()
    response.headers.set("Content-Type", SDP)
    respond_offer(call, dialog, tx, response)
    call._apply_remote_media()


def respond_offer(call: Call, dialog: Dialog, tx: ServerTransaction, response: Response) -> None:
    if tx.request.method != "INVITE":
        tx.respond(response)  # UPDATE: a non-INVITE transaction, no ACK
        return
    call._spawn(await_reinvite_ack(call, dialog, tx, response))


async def await_reinvite_ack(
    call: Call, dialog: Dialog, tx: ServerTransaction, response: Response
) -> None:
    """RFC 3261 section 13.3.1.4: the 2xx goes again until the ACK; none in 64*T1
    ends the call (BYE)."""
    ack = await call.ua.answer_invite(dialog, tx, response)
    if ack is not None:
        call.on_ack(dialog, ack)
    elif call.active and call._dialog is dialog:
        await call._end(CallEnded(408, "No ACK for the answer to a re-INVITE", "remote"))
