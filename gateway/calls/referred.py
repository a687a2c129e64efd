"""The far end transfers our user (RFC 3515): REFER in, NOTIFY sipfrags out.

Like a 3xx, the Refer-To target is routed as if our user dialled it; the call then moves to
the new dialog on the same browser leg and RTP port, and the old one is ended.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sipmessage import Address, Request

import sdp
from gateway.calls.page import Transferred
from gateway.sip import headers
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction
from gateway.sip.ua import Answered, OutgoingInvite, Redirect

if TYPE_CHECKING:
    from gateway.calls.call import Call


def on_refer(call: Call, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
    """The far end transfers our user: only where the account allows it (RFC 3515)."""
    account = call.account
    if account is None or not account.allow_refer:
        tx.respond_code(403, "Forbidden (transfer not allowed)")
        return
    try:
        refer_to = headers.refer_to(request)
    except ValueError:
        refer_to = None
    if refer_to is None:
        tx.respond_code(400, "Bad Refer-To")
        return
    uri = refer_to.address.uri
    # Like a 3xx: the target is routed as if our user dialled it, never sent as it came.
    redirect = call._redirected(uri, dialog.origin)
    if redirect is None:
        tx.respond_code(403, "Forbidden (transfer target not allowed)")
        return
    tx.respond_code(202)
    call._spawn(follow_refer(call, dialog, redirect))


async def follow_refer(call: Call, old: Dialog, redirect: Redirect) -> None:
    """Call the transfer target from the same browser leg and RTP port, then swap."""
    await send_sipfrag(call, old, "SIP/2.0 100 Trying")
    offer = call.media.full_offer(call.media.codec)
    target = redirect.target
    invite = OutgoingInvite(
        call.ua,
        target=target,
        peer=redirect.peer,
        from_address=Address(uri=old.local_address.uri, name=old.local_address.name),
        to_address=Address(uri=target),
        sdp=offer.sdp.encode(),
        credentials=redirect.credentials,
        credential_hosts=redirect.credential_hosts,
        on_credentials_withheld=call._credentials_withheld,
        on_redirect=call._redirected,
    )
    outcome = await invite.run()
    if not isinstance(outcome, Answered):
        await send_sipfrag(call, old, f"SIP/2.0 {outcome.code} {outcome.reason}")
        return
    try:
        call.media.take_answer(outcome.sdp.decode(errors="replace"), offer)
    except sdp.SdpError:
        await call.ua.bye(outcome.dialog)
        await send_sipfrag(call, old, "SIP/2.0 488 Not Acceptable Here")
        return
    call.ua.register_dialog(outcome.dialog, call)
    call._dialog = outcome.dialog
    call._apply_remote_media()
    await send_sipfrag(call, old, "SIP/2.0 200 OK")
    call.ua.unregister_dialog(old)
    await call.ua.bye(old)
    call.notify(Transferred(call.id, str(target)))


async def send_sipfrag(call: Call, dialog: Dialog, status: str) -> None:
    final = "terminated;reason=noresource" if not status.startswith("SIP/2.0 1") else "active"
    body = (status + "\r\n").encode()
    await call.ua.notify(dialog, "refer", final, body, "message/sipfrag;version=2.0")
