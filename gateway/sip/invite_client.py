"""The INVITE client session (RFC 3261 section 13.2): from the first INVITE to the ACK of
the 2xx, with credentials after 401/407, redirects after 3xx, and CANCEL while ringing."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from sipmessage import URI, Address, Request, Response

from gateway.sip import message as sipmsg
from gateway.sip.auth import AuthError, Credentials, DigestClient
from gateway.sip.dialog import Dialog, DialogState
from gateway.sip.indialog import cancel_for
from gateway.sip.invite import ALLOW, SDP, is_sdp
from gateway.sip.transaction import TransactionTimeout
from gateway.sip.transport import Peer
from gateway.sip.values import peer_for_uri

if TYPE_CHECKING:
    from gateway.sip.ua import UserAgent

log = logging.getLogger(__name__)


class InviteState(StrEnum):
    CALLING = "calling"
    PROCEEDING = "proceeding"
    CANCELLING = "cancelling"
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass(frozen=True)
class Provisional:
    code: int
    reason: str
    sdp: bytes | None


@dataclass(frozen=True)
class Answered:
    dialog: Dialog
    sdp: bytes
    response: Response | None = None


@dataclass(frozen=True)
class Failed:
    code: int
    reason: str


InviteOutcome = Answered | Failed


@dataclass(frozen=True)
class Redirect:
    """Where to send the INVITE after a 3xx (or a REFER): the caller decides, through
    `on_redirect`, with the credentials and the hosts that may be given them."""

    target: URI
    peer: Peer
    credentials: Credentials | None
    credential_hosts: frozenset[str]


class OutgoingInvite:
    """One INVITE client session, from the first INVITE to the 2xx ACK or the failure."""

    MAX_AUTH_ATTEMPTS = 2
    MAX_REDIRECTS = 3

    def __init__(
        self,
        ua: UserAgent,
        *,
        target: URI,
        peer: Peer,
        from_address: Address,
        to_address: Address,
        sdp: bytes,
        credentials: Credentials | None,
        on_provisional: Callable[[Provisional], None] | None = None,
        extra_headers: tuple[tuple[str, str], ...] = (),
        on_redirect: Callable[[URI, Peer], Redirect | None] | None = None,
        credential_hosts: Collection[str] | None = None,
        on_credentials_withheld: Callable[[Peer, Response], None] | None = None,
    ) -> None:
        self.ua = ua
        self.target = target
        self.peer = peer
        self.from_address = sipmsg.with_tag(from_address, sipmsg.new_tag())
        self.to_address = to_address
        self.sdp = sdp
        self.call_id = sipmsg.new_call_id(ua.transport.advertised_host)
        self.on_provisional = on_provisional
        self.extra_headers = extra_headers
        self.state = InviteState.CALLING
        self.history: list[InviteState] = [InviteState.CALLING]
        self._credentials = credentials
        self._digest = DigestClient(credentials) if credentials else None
        # Credentials answer challenges only from these next hops (the account's own
        # hosts): a 3xx or REFER must not make us compute a digest for whoever asks.
        self.credential_hosts = frozenset(
            credential_hosts if credential_hosts is not None else (peer.host, target.host)
        )
        # Decides where a 3xx goes, given its Contact and who sent it (None: not followed);
        # without it, the Contact itself is tried.
        self.on_redirect = on_redirect
        self.on_credentials_withheld = on_credentials_withheld
        self._cseq = 1
        self._request: Request | None = None
        self._cancel_requested = False
        self._cancel_sent = False
        self._dialog: Dialog | None = None
        # Dialogs made by 2xx from other forks (their To tags), ACKed and ended with BYE.
        self._forks: dict[str, Dialog] = {}
        # When the first INVITE went to the transport (the gateway's share of set-up ends).
        self.first_sent_at: float | None = None

    def _set_state(self, state: InviteState) -> None:
        if state is not self.state:
            log.debug("INVITE %s: %s -> %s", self.call_id, self.state, state)
            self.state = state
            self.history.append(state)

    def _build(self) -> Request:
        request = sipmsg.build_request(
            sipmsg.RequestSpec(
                method="INVITE",
                uri=self.target,
                from_address=self.from_address,
                to_address=self.to_address,
                call_id=self.call_id,
                cseq=self._cseq,
                contact=self.ua.tl.contact_for(
                    self.from_address.uri.user, self.peer, sips=self.target.scheme == "sips"
                ),
                body=self.sdp,
                content_type=SDP,
                user_agent=self.ua.user_agent,
            )
        )
        request.headers.set("Allow", ALLOW)
        for name, value in self.extra_headers:
            request.headers.add(name, value)
        return request

    async def run(self) -> InviteOutcome:
        request = self._build()
        attempts = 0
        redirects = 0
        retried_422 = False
        while True:
            response = await self._send(request)
            if response is None:
                self._set_state(InviteState.FAILED)
                return Failed(408, "Request Timeout")
            if 200 <= response.code < 300:
                return self._answered(request, response)
            if self._may_answer(response, attempts):
                if self.peer.host not in self.credential_hosts:
                    self._withhold(response)
                else:
                    attempts += 1
                    authorized = self._authorize(response)
                    if authorized is not None:
                        request = authorized
                        continue
            if response.code == 422 and not retried_422 and self._raise_session_expires(response):
                # RFC 4028 section 7.4: once, with the interval the 422's Min-SE asks for.
                retried_422 = True
                self._cseq += 1
                request = self._build()
                continue
            redirect = self._redirect(response) if redirects < self.MAX_REDIRECTS else None
            if redirect is not None:
                redirects += 1
                attempts = 0
                self._follow(response, redirect)
                request = self._build()
                continue
            self._set_state(InviteState.FAILED)
            return Failed(response.code, response.phrase)

    async def _send(self, request: Request) -> Response | None:
        """The final response to `request`; None if the transaction timed out."""
        self._request = request
        tx = self.ua.tl.send_request(request, self.peer, self._on_response)
        if self.first_sent_at is None:
            self.first_sent_at = time.monotonic()
        try:
            return await tx.final
        except TransactionTimeout:
            return None

    def _may_answer(self, response: Response, attempts: int) -> bool:
        """A 401/407 we have credentials and tries left for, and no CANCEL pending."""
        challenged = response.code in (401, 407) and not self._cancel_requested
        return challenged and self._digest is not None and attempts < self.MAX_AUTH_ATTEMPTS

    def _authorize(self, response: Response) -> Request | None:
        """The next INVITE with credentials for this challenge; None if we cannot answer it."""
        assert self._digest is not None  # _may_answer checked
        try:
            self._cseq += 1
            return self._digest.authorize(self._rebuild(), response)
        except AuthError as exc:
            log.warning("INVITE %s: cannot authenticate: %s", self.call_id, exc)
            return None

    def _follow(self, response: Response, redirect: Redirect) -> None:
        """Section 8.1.3.4: retry at the Contact, same Call-ID and From tag, new CSeq."""
        log.info("INVITE %s: %d redirects to %s", self.call_id, response.code, redirect.target)
        self.target, self.peer = redirect.target, redirect.peer
        self.credential_hosts = redirect.credential_hosts
        if redirect.credentials != self._credentials:
            credentials = self._credentials = redirect.credentials
            self._digest = DigestClient(credentials) if credentials else None
        self._cseq += 1

    def _raise_session_expires(self, response: Response) -> bool:
        """Take a 422's Min-SE into our Session-Expires and Min-SE; False if it cannot be
        (no timer asked for, no usable Min-SE, or not larger than what we asked)."""
        value = (response.headers.get("Min-SE") or "").partition(";")[0].strip()
        asked = next((v for n, v in self.extra_headers if n.lower() == "session-expires"), None)
        if not value.isdigit() or asked is None:
            return False
        minimum = int(value)
        if minimum <= int(asked.partition(";")[0].strip() or 0):
            return False
        kept = tuple(
            (n, v) for n, v in self.extra_headers if n.lower() not in ("session-expires", "min-se")
        )
        self.extra_headers = (*kept, ("Session-Expires", str(minimum)), ("Min-SE", str(minimum)))
        return True

    def _withhold(self, response: Response) -> None:
        log.warning(
            "INVITE %s: %d from %s, not one of the account's hosts: credentials withheld",
            self.call_id,
            response.code,
            self.peer.host,
        )
        if self.on_credentials_withheld is not None:
            self.on_credentials_withheld(self.peer, response)

    def _redirect(self, response: Response) -> Redirect | None:
        if not 300 <= response.code < 400 or self._cancel_requested:
            return None
        try:
            contacts = response.contact
        except ValueError:
            return None
        for contact in contacts:
            uri = contact.uri
            if uri.scheme not in ("sip", "sips"):
                continue
            if self.on_redirect is not None:
                redirect = self.on_redirect(uri, self.peer)
                if redirect is not None:
                    return redirect
                continue
            # Only the hosts trusted so far keep seeing our credentials.
            peer = peer_for_uri(uri, self.peer)
            return Redirect(uri, peer, self._credentials, self.credential_hosts)
        return None

    def _rebuild(self) -> Request:
        """Same Call-ID and From tag, next CSeq, new branch (section 22.2)."""
        return self._build()

    def _answered(self, request: Request, response: Response) -> InviteOutcome:
        dialog = self._dialog
        assert dialog is not None  # _on_response made it before resolving final
        if self._cancel_requested:
            # The 2xx crossed our CANCEL: confirm then end it (section 15, 9.1).
            self.ua.spawn(self.ua.bye(dialog))
            self._set_state(InviteState.FAILED)
            return Failed(487, "Request Terminated")
        self._set_state(InviteState.ANSWERED)
        return Answered(dialog, response.body, response)

    def _on_response(self, response: Response) -> None:
        request = self._request
        if request is None:
            return
        if response.code < 200:
            if response.code > 100:
                self._set_state(InviteState.PROCEEDING)
                if self.on_provisional is not None:
                    body = response.body if is_sdp(response) else None
                    self.on_provisional(Provisional(response.code, response.phrase, body))
            if self._cancel_requested and not self._cancel_sent:
                self._send_cancel()
            return
        if 200 <= response.code < 300:
            # Answered: no more provisionals to pass on. The transaction keeps this object
            # for 64*T1 to ACK retransmitted 2xx; without the callback it no longer keeps
            # the call (its peer connection, its page session) alive that long as well.
            # (A 3xx or 401/407 is followed by a new INVITE whose 180 the call still wants.)
            self.on_provisional = None
            self.on_redirect = self.on_credentials_withheld = None
            dialog = self._dialog_for(request, response)
            # Every 2xx, first or retransmitted, is ACKed in its own dialog (13.2.2.4).
            self.ua.tl.send_ack(dialog.ack(request.cseq.sequence), dialog.next_hop())

    def _dialog_for(self, request: Request, response: Response) -> Dialog:
        """Section 13.2.2.4: each 2xx's To tag makes a dialog of its own. The first is the
        call; one from another fork of a forking proxy is ACKed, then ended with BYE."""
        if self._dialog is None:
            self._dialog = Dialog.from_uac(request, response, self.peer)
            self._dialog.set_state(DialogState.CONFIRMED)
            return self._dialog
        tag = sipmsg.tag_of(response.to_address) or ""
        if tag == self._dialog.remote_tag:
            return self._dialog
        fork = self._forks.get(tag)
        if fork is None:
            fork = Dialog.from_uac(request, response, self.peer)
            self._forks[tag] = fork
            log.info("INVITE %s: 2xx from a second fork (tag %s): ACK and BYE", self.call_id, tag)
            # BYE after the ACK below has gone: the UA's task runs on a later loop turn.
            self.ua.spawn(self.ua.bye(fork))
        return fork

    def cancel(self) -> None:
        """Section 9.1: CANCEL only after a provisional response has arrived."""
        if self.state in (InviteState.ANSWERED, InviteState.FAILED) or self._cancel_requested:
            return
        self._cancel_requested = True
        self._set_state(InviteState.CANCELLING)
        request = self._request
        if request is None:
            return
        tx = self.ua.tl.find_client(sipmsg.branch_of(request), "INVITE")
        if tx is not None and tx.provisional_seen:
            self._send_cancel()

    def _send_cancel(self) -> None:
        request = self._request
        if request is None or self._cancel_sent:
            return
        self._cancel_sent = True
        tx = self.ua.tl.send_request(cancel_for(request), self.peer)
        # Nobody waits for the CANCEL's own answer: the INVITE's 487 is what matters.
        tx.final.add_done_callback(lambda f: f.cancelled() or f.exception())
