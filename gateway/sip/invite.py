"""What both INVITE sessions and the UA share: what we Allow, the SDP content type, and
the owner a dialog's requests go to."""

from __future__ import annotations

from typing import Protocol

from sipmessage import Request, Response

from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction

# Everything calls/call.py answers in a dialog: peers only send what Allow lists.
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REFER, NOTIFY"
SDP = "application/sdp"


class DialogOwner(Protocol):
    """Whoever holds a dialog: a call, or the demo endpoint."""

    def on_bye(self, dialog: Dialog) -> None: ...

    def on_in_dialog_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        """Any in-dialog request but BYE and ACK; must send a final response."""

    def on_ack(self, dialog: Dialog, ack: Request) -> None:
        """The ACK of a 2xx to a re-INVITE (it carries the answer after a late offer)."""


def is_sdp(message: Request | Response) -> bool:
    content_type = message.headers.get("Content-Type") or ""
    return bool(message.body) and content_type.lower().startswith(SDP)
