"""A bridged call: one browser leg, one SIP dialog and one bridge, as a B2BUA.

`Call` holds what outbound (outbound.py) and inbound (inbound.py) calls share once they
are set up: in-call features (DTMF, hold, blind transfer), the far end's re-INVITE,
UPDATE, INFO and REFER, session timers, the RTP watchdog, and the one way out, `_end`,
which sends what SIP needs, tells the page why, and releases ports, peer connection
and tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from sipmessage import URI, Address, Request, Response

import sdp
from gateway.calls.media_state import SipMediaState
from gateway.config import Config, Trunk
from gateway.media.bridge import Bridge
from gateway.media.browser_leg import BrowserLeg
from gateway.media.dtmf import info_body, parse_info_body
from gateway.media.ports import PortAllocator
from gateway.media.sip_leg import SipMediaLeg
from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction
from gateway.sip.transport import Peer
from gateway.sip.ua import Answered, OutgoingInvite, Redirect, UserAgent

log = logging.getLogger(__name__)

Notify = Callable[[dict[str, Any]], None]
SDP = "application/sdp"


class CallError(Exception):
    """A page request that cannot be done now; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class CallState(StrEnum):
    NEW = "new"
    CALLING = "calling"
    RINGING = "ringing"
    EARLY_MEDIA = "early-media"
    ANSWERING = "answering"  # a page accepted an incoming call; the SIP 200 is on its way
    CONNECTED = "connected"
    ENDING = "ending"
    ENDED = "ended"


@dataclass(frozen=True)
class CallEnded:
    code: int
    reason: str
    by: str  # "local" (the browser), "remote" (the SIP side) or "gateway"


@dataclass(frozen=True)
class Route:
    """Where the call goes: the Request-URI and the next hop, plus the account."""

    target: URI
    peer: Peer
    trunk: Trunk | None


class Redirector(Protocol):
    """The gateway's side of a 3xx or REFER: routes the target through the dial plan and
    the policy of the call's user (None: refused), and hears of withheld credentials."""

    def redirect(self, call: Any, uri: URI, source: Peer) -> Redirect | None: ...

    def withheld(self, call: Any, peer: Peer, response: Response) -> None: ...


class Call:
    # Set by the gateway; without one, no 3xx or REFER is followed.
    redirector: Redirector | None = None

    def __init__(
        self,
        call_id: str,
        *,
        ua: UserAgent,
        config: Config,
        ports: PortAllocator,
        notify: Notify,
        account: Trunk | None,
    ) -> None:
        self.id = call_id
        self.ua = ua
        self.config = config
        self.ports = ports
        self.notify = notify
        self.account = account
        self.state = CallState.NEW
        self.history: list[CallState] = [CallState.NEW]
        self.ended: asyncio.Future[CallEnded] = asyncio.get_running_loop().create_future()
        self.prefix = f"[call {call_id[:12]}] "
        self.media = SipMediaState(config.advertised_address, 0)
        self.held_local = False
        self.held_remote = False
        self._sip_media: SipMediaLeg | None = None
        self._browser: BrowserLeg | None = None
        self._bridge: Bridge | None = None
        self._dialog: Dialog | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[Any] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._session_expires: int | None = None
        self._we_refresh = False
        self._transfer_target: str | None = None
        # Our offer in a 2xx to a re-INVITE without SDP, answered in the ACK.
        self._pending_offer: sdp.SipOffer | None = None

    # --- state and helpers ----------------------------------------------------------

    def _set_state(self, state: CallState) -> None:
        if state is self.state:
            return
        # DEBUG: at a hundred calls a second, INFO lines per transition cost 5 % of a core;
        # the end of every call is logged at INFO with its reason.
        log.debug("%s%s -> %s", self.prefix, self.state, state)
        self.state = state
        self.history.append(state)

    @property
    def active(self) -> bool:
        return self.state not in (CallState.ENDING, CallState.ENDED)

    def describe(self) -> dict[str, Any]:
        """What /healthz shows about this call: enough to see how its media is carried."""
        bridge = self._bridge
        return {
            "id": self.id,
            "state": self.state.value,
            "sip_codec": bridge.to_sip.dst.name if bridge else None,
            "browser_codec": bridge.browser_codec.name if bridge else None,
            "transcoding": bridge.transcoding if bridge else None,
            "held": {"local": self.held_local, "remote": self.held_remote},
        }

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("%stask failed", self.prefix, exc_info=task.exception())
            if self.active:
                self._spawn_end(CallEnded(500, "Gateway error", "gateway"))

    def _timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel_timer(name)
        self._timers[name] = asyncio.get_running_loop().call_later(delay, callback)

    def _cancel_timer(self, name: str) -> None:
        handle = self._timers.pop(name, None)
        if handle is not None:
            handle.cancel()

    async def _ended_during_setup(self) -> bool:
        """After each await of a set-up: True if `_end` ran meanwhile (CANCEL, hang-up,
        the page or socket gone, ICE failure). `_end` released what existed when it ran;
        this releases what set-up made since, so nothing outlives the call."""
        if not self.ended.done():
            return False
        if self._sip_media is not None:
            self._sip_media.close()
        if self._bridge is not None:
            self._bridge.stop()
        if self._browser is not None:
            await self._browser.close()
        return True

    async def _open_sip_media(self) -> SipMediaLeg:
        media = SipMediaLeg(
            self.config.sip_bind,
            self.ports,
            log_prefix=self.prefix,
            probation=self.config.rtp_probation,
        )
        self._sip_media = media
        await media.open()
        self.media.port = media.port
        return media

    def _bridge_media(self, browser_codec: sdp.Codec) -> None:
        """(Re)connect the SIP leg to what the far end's SDP says, and bridge it."""
        assert self._sip_media is not None and self._browser is not None
        remote, codec = self.media.remote, self.media.codec
        assert remote is not None and codec is not None
        if self._sip_media.remote != (remote.address, remote.port):
            self._sip_media.set_remote(remote.address, remote.port)
        if self._bridge is None:
            self._bridge = Bridge(
                self._browser, self._sip_media, browser_codec, codec, log_prefix=self.prefix
            )
            self._bridge.on_digit = self._on_digit
        else:
            self._bridge.set_sip_codec(codec)
        self._bridge.set_telephone_event(self.media.telephone_event)
        self._update_send_direction()

    def _update_send_direction(self) -> None:
        """RFC 3264 section 8.4: no audio to a far end that holds us (we answered recvonly or
        inactive) or that we hold (no music on hold yet: silence)."""
        if self._bridge is not None:
            self._bridge.send_to_sip = not self.held_local and self.media.direction in (
                "sendrecv",
                "sendonly",
            )

    def _connected(self) -> None:
        self._set_state(CallState.CONNECTED)
        self._watchdog = self._spawn(self._watch_rtp())

    def _on_ice_failed(self) -> None:
        if self.active:
            self._spawn_end(CallEnded(408, "Browser media connection failed", "gateway"))

    def _on_digit(self, digit: str) -> None:
        self.notify({"type": "dtmf", "id": self.id, "digit": digit})

    # --- page requests (subclasses add setup-specific ones) -------------------------

    def hangup(self, session: Any = None) -> None:
        if self.active:
            self._spawn_end(CallEnded(200, "Hung up", "local"))

    def leave(self, session: Any) -> None:
        """A page this call rings on went away (calls that ring override this)."""

    def accept(self, session: Any, answer: str) -> None:
        raise CallError("bad-state", "only an incoming call can be accepted")

    def reject(self, session: Any, code: int) -> None:
        raise CallError("bad-state", "only an incoming call can be rejected")

    def candidate(self, session: Any, candidate: dict[str, Any] | None) -> None:
        """Bridged calls carry complete SDPs; late candidates add nothing."""

    def _connected_dialog(self) -> Dialog:
        if self._dialog is None or self.state is not CallState.CONNECTED:
            raise CallError("bad-state", "the call is not connected")
        return self._dialog

    async def send_dtmf(self, digits: str) -> None:
        """RFC 4733 when the far end negotiated telephone-event, SIP INFO otherwise."""
        dialog = self._connected_dialog()
        if self._bridge is not None and self._bridge.send_dtmf(digits):
            return
        for digit in digits:
            content_type, body = info_body(digit)
            await self.ua.info(dialog, body, content_type)

    async def hold(self, on: bool) -> None:
        """re-INVITE with sendonly to hold, sendrecv to resume (RFC 3264 section 8.4)."""
        dialog = self._connected_dialog()
        if on == self.held_local:
            return
        offer = self.media.offer("sendonly" if on else "sendrecv")
        response = await self._reinvite(dialog, offer)
        if response is None or not 200 <= response.code < 300:
            self.media.direction = "sendrecv" if on else "sendonly"
            code = response.code if response else 408
            raise CallError("bad-state", f"the far end refused the re-INVITE ({code})")
        self.held_local = on
        self._apply_remote_media()  # the answer may move the far end's address or codec
        self.notify({"type": "held", "id": self.id, "held": on, "by": "local"})

    async def _reinvite(self, dialog: Dialog, offer: str) -> Response | None:
        """The UA ACKs the 2xx, retries after 491 (RFC 3261 section 14.1) and gives up
        (CANCEL, None) 64*T1 after sending, whatever provisional came."""
        response = await self.ua.reinvite(dialog, offer.encode(), self._session_timer_headers())
        if response is not None and 200 <= response.code < 300:
            if response.body and self.media.remote is not None:
                with contextlib.suppress(sdp.SdpError):
                    self.media.remote = sdp.parse_remote(response.body.decode(errors="replace"))
            self._take_session_timer(response, we_are_uac=True)
        return response

    async def transfer(self, to: str, target: URI) -> None:
        """Blind transfer (RFC 3515): REFER, then NOTIFY progress, then our BYE."""
        dialog = self._connected_dialog()
        if self._transfer_target is not None:
            raise CallError("bad-state", "a transfer is already in progress")
        self._transfer_target = to
        self._notify_transfer("trying")
        try:
            response = await self.ua.refer(dialog, target)
        except asyncio.CancelledError:
            self._transfer_target = None  # abandoned: the page hung up
            raise
        if response is None:
            self._transfer_failed(408, "No answer to REFER")
            return
        if not 200 <= response.code < 300:
            self._transfer_failed(response.code, response.phrase)
            return
        self._notify_transfer("accepted")
        # The outcome comes in NOTIFYs (on_in_dialog_request); give up if none says so.
        # The target may ring for as long as we would let a call ring, then some.
        self._timer(
            "transfer",
            self.config.no_answer_timeout + 64 * self.config.sip_t1,
            self._transfer_timed_out,
        )

    def _notify_transfer(self, state: str, code: int | None = None, reason: str = "") -> None:
        message: dict[str, Any] = {"type": "transfer", "id": self.id, "state": state}
        if code is not None:
            message.update(code=code, reason=reason)
        self.notify(message)

    def _transfer_failed(self, code: int, reason: str) -> None:
        self._transfer_target = None
        self._cancel_timer("transfer")
        self._notify_transfer("failed", code, reason)

    def _transfer_timed_out(self) -> None:
        self._transfer_failed(408, "No transfer result")

    def _on_refer_notify(self, request: Request) -> None:
        """RFC 3515 section 2.4.5: the NOTIFY body is a sipfrag status line."""
        line = request.body.decode(errors="replace").strip().splitlines()
        parts = line[0].split(" ", 2) if line else []
        if len(parts) < 2 or not parts[1].isdigit():
            return
        code, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
        if code < 200:
            self._notify_transfer("ringing" if code in (180, 183) else "trying", code, reason)
        elif code < 300:
            self._cancel_timer("transfer")
            self._notify_transfer("done", code, reason)
            self._spawn_end(CallEnded(200, "Transferred", "local"))
        else:
            self._transfer_failed(code, reason)

    # --- session timers (RFC 4028) --------------------------------------------------

    def _session_timer_headers(self) -> tuple[tuple[str, str], ...]:
        headers = [("Supported", "timer")]
        if self._session_expires:
            refresher = "uac" if self._we_refresh else "uas"
            headers.append(("Session-Expires", f"{self._session_expires};refresher={refresher}"))
        return tuple(headers)

    def _take_session_timer(self, message: Request | Response, *, we_are_uac: bool) -> None:
        """Start refreshing or watching, as the Session-Expires of a 2xx or INVITE says."""
        header = message.headers.get("Session-Expires") or message.headers.get("x")
        if not header:
            return
        value, _, params = header.partition(";")
        try:
            interval = max(int(value.strip()), self.config.min_session_expires)
        except ValueError:
            return
        refresher = "uac" if "refresher=uac" in params.replace(" ", "") else "uas"
        if "refresher=" not in params:
            refresher = "uac" if we_are_uac else "uas"
        self._session_expires = interval
        self._we_refresh = (refresher == "uac") == we_are_uac
        if self._we_refresh:
            self._timer("session-refresh", interval / 2, self._refresh_session)
            self._cancel_timer("session-expiry")
        else:
            self._timer("session-expiry", interval - min(32, interval / 3), self._session_expired)

    def _refresh_session(self) -> None:
        if self._dialog is not None and self.active:
            self._spawn(self._refresh(self._dialog))

    async def _refresh(self, dialog: Dialog) -> None:
        response = await self._reinvite(dialog, self.media.offer(self.media.direction))
        if response is None or response.code in (408, 481):
            # RFC 4028 section 10: a refresh that times out or finds no dialog ends the session.
            code = response.code if response else 408
            await self._end(CallEnded(code, "Session refresh failed", "gateway"))

    def _session_expired(self) -> None:
        log.info("%ssession timer expired without a refresh", self.prefix)
        self._spawn_end(CallEnded(408, "Session expired (no refresh)", "gateway"))

    def _session_refreshed(self) -> None:
        if self._session_expires and not self._we_refresh:
            interval = self._session_expires
            self._timer("session-expiry", interval - min(32, interval / 3), self._session_expired)

    def session_too_brief(self, request: Request) -> bool:
        """RFC 4028 section 8.1: an interval under our Min-SE is refused with 422."""
        header = request.headers.get("Session-Expires") or request.headers.get("x")
        value = (header or "").partition(";")[0].strip()
        return value.isdigit() and int(value) < self.config.min_session_expires

    def _session_expires_header(self) -> str | None:
        if not self._session_expires:
            return None
        return f"{self._session_expires};refresher={'uas' if self._we_refresh else 'uac'}"

    # --- RTP watchdog ---------------------------------------------------------------

    async def _watch_rtp(self) -> None:
        """End a call whose SIP-side audio stopped: a dead peer must not hold the line."""
        timeout = self.config.rtp_timeout
        last_seen = time.monotonic()
        while self.active:
            await asyncio.sleep(min(1.0, timeout / 4))
            media = self._sip_media
            if media is None:
                return
            if media.stats.last_rx:
                last_seen = max(last_seen, media.stats.last_rx)
            on_hold = self.held_local or self.held_remote or self.media.remote_holds
            if on_hold:
                last_seen = time.monotonic()
            elif time.monotonic() - last_seen > timeout:
                log.info("%sno RTP for %.0f s", self.prefix, timeout)
                await self._end(CallEnded(408, "Media timeout (no RTP)", "gateway"))
                return

    # --- requests from the SIP side -------------------------------------------------

    def on_bye(self, dialog: Dialog) -> None:
        self._dialog = None  # the UA answered the BYE and closed the dialog
        self._spawn_end(CallEnded(200, "Remote party hung up", "remote"))

    def on_ack(self, dialog: Dialog, ack: Request) -> None:
        """The answer to the offer we put in a 2xx to a re-INVITE without SDP."""
        if ack.body and self._pending_offer is not None:
            with contextlib.suppress(sdp.SdpError):
                self.media.take_answer(ack.body.decode(errors="replace"), self._pending_offer)
                self._apply_remote_media()
        self._pending_offer = None

    def on_in_dialog_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        method = request.method
        if method in ("INVITE", "UPDATE"):
            self._on_offer_request(dialog, request, tx)
        elif method == "INFO":
            digit = parse_info_body(request.headers.get("Content-Type") or "", request.body)
            tx.respond_code(200)
            if digit is not None:
                self._on_digit(digit)
        elif method == "NOTIFY":
            tx.respond_code(200)
            if (request.headers.get("Event") or "").lower().startswith("refer"):
                self._on_refer_notify(request)
        elif method == "REFER":
            self._on_refer(dialog, request, tx)
        elif method == "OPTIONS":
            tx.respond_code(200)
        else:
            tx.respond_code(501)

    def _on_offer_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        """re-INVITE or UPDATE: hold, resume, new address, codec change or session refresh."""
        self._session_refreshed()
        self._take_session_timer(request, we_are_uac=False)
        response = sipmsg.make_response(request, 200, to_tag=dialog.local_tag)
        response.headers.set("Contact", str(dialog.contact))
        expires = self._session_expires_header()
        if expires:
            response.headers.set("Session-Expires", expires)
            response.headers.set("Require", "timer")
        if not request.body:
            if request.method == "INVITE":
                # Late offer in a re-INVITE: we offer in the 2xx, the ACK answers.
                self._pending_offer = self.media.full_offer(self.media.codec)
                response.body = self._pending_offer.sdp.encode()
                response.headers.set("Content-Type", SDP)
            self._respond_offer(dialog, tx, response)
            return
        try:
            answer = self.media.answer(request.body.decode(errors="replace"), hold=self.held_local)
        except sdp.SdpError as exc:
            log.info("%sunusable re-offer: %s", self.prefix, exc)
            tx.respond_code(488, "Not Acceptable Here")
            return
        response.body = answer.encode()
        response.headers.set("Content-Type", SDP)
        self._respond_offer(dialog, tx, response)
        self._apply_remote_media()

    def _respond_offer(self, dialog: Dialog, tx: ServerTransaction, response: Response) -> None:
        if tx.request.method != "INVITE":
            tx.respond(response)  # UPDATE: a non-INVITE transaction, no ACK
            return
        self._spawn(self._await_reinvite_ack(dialog, tx, response))

    async def _await_reinvite_ack(
        self, dialog: Dialog, tx: ServerTransaction, response: Response
    ) -> None:
        """RFC 3261 section 13.3.1.4: the 2xx goes again until the ACK; none in 64*T1
        ends the call (BYE)."""
        ack = await self.ua.answer_invite(dialog, tx, response)
        if ack is not None:
            self.on_ack(dialog, ack)
        elif self.active and self._dialog is dialog:
            await self._end(CallEnded(408, "No ACK for the answer to a re-INVITE", "remote"))

    def _apply_remote_media(self) -> None:
        if self._bridge is not None and self._browser is not None:
            self._bridge_media(self._bridge.browser_codec)
        self._update_send_direction()
        held = self.media.remote_holds
        if held != self.held_remote:
            self.held_remote = held
            self.notify({"type": "held", "id": self.id, "held": held, "by": "remote"})

    def _on_refer(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        """The far end transfers our user: only where the account allows it (RFC 3515)."""
        account = self.account
        refer_to = request.headers.get("Refer-To") or request.headers.get("r")
        if account is None or not account.allow_refer:
            tx.respond_code(403, "Forbidden (transfer not allowed)")
            return
        try:
            uri = Address.parse(refer_to or "").uri
        except ValueError:
            tx.respond_code(400, "Bad Refer-To")
            return
        # Like a 3xx: the target is routed as if our user dialled it, never sent as it came.
        redirect = self._redirected(uri, dialog.origin)
        if redirect is None:
            tx.respond_code(403, "Forbidden (transfer target not allowed)")
            return
        tx.respond_code(202)
        self._spawn(self._follow_refer(dialog, redirect))

    def _redirected(self, uri: URI, source: Peer) -> Redirect | None:
        """Where a 3xx Contact or a Refer-To may take this call (None: nowhere)."""
        if uri.scheme not in ("sip", "sips") or self.redirector is None:
            return None
        return self.redirector.redirect(self, uri, source)

    def _credentials_withheld(self, peer: Peer, response: Response) -> None:
        if self.redirector is not None:
            self.redirector.withheld(self, peer, response)

    async def _follow_refer(self, old: Dialog, redirect: Redirect) -> None:
        """Call the transfer target from the same browser leg and RTP port, then swap."""
        await self._send_sipfrag(old, "SIP/2.0 100 Trying")
        offer = self.media.full_offer(self.media.codec)
        target = redirect.target
        invite = OutgoingInvite(
            self.ua,
            target=target,
            peer=redirect.peer,
            from_address=Address(uri=old.local_address.uri, name=old.local_address.name),
            to_address=Address(uri=target),
            sdp=offer.sdp.encode(),
            credentials=redirect.credentials,
            credential_hosts=redirect.credential_hosts,
            on_credentials_withheld=self._credentials_withheld,
            on_redirect=self._redirected,
        )
        outcome = await invite.run()
        if not isinstance(outcome, Answered):
            await self._send_sipfrag(old, f"SIP/2.0 {outcome.code} {outcome.reason}")
            return
        try:
            self.media.take_answer(outcome.sdp.decode(errors="replace"), offer)
        except sdp.SdpError:
            await self.ua.bye(outcome.dialog)
            await self._send_sipfrag(old, "SIP/2.0 488 Not Acceptable Here")
            return
        self.ua.register_dialog(outcome.dialog, self)
        self._dialog = outcome.dialog
        self._apply_remote_media()
        await self._send_sipfrag(old, "SIP/2.0 200 OK")
        self.ua.unregister_dialog(old)
        await self.ua.bye(old)
        self.notify({"type": "transferred", "id": self.id, "to": str(target)})

    async def _send_sipfrag(self, dialog: Dialog, status: str) -> None:
        final = "terminated;reason=noresource" if not status.startswith("SIP/2.0 1") else "active"
        body = (status + "\r\n").encode()
        await self.ua.notify(dialog, "refer", final, body, "message/sipfrag;version=2.0")

    # --- ending ---------------------------------------------------------------------

    def _spawn_end(self, ended: CallEnded) -> None:
        task = asyncio.ensure_future(self._end(ended))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _cancel_setup(self) -> None:
        """Subclasses: stop a setup still under way (CANCEL, or reject the INVITE)."""

    async def close(self, reason: str = "Gateway shutting down") -> None:
        """Shutdown or WebSocket loss: end the call whatever its state, and wait for it."""
        if not self.ended.done():
            await self._end(CallEnded(503, reason, "gateway"))
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _end(self, ended: CallEnded) -> None:
        if self.ended.done():
            return
        self._set_state(CallState.ENDING)
        for name in list(self._timers):
            self._cancel_timer(name)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None and watchdog is not asyncio.current_task():
            watchdog.cancel()  # else it holds the ended call until its next tick
        dialog, self._dialog = self._dialog, None
        if dialog is None:
            self._cancel_setup()
        if self._bridge is not None:
            self._bridge.stop()
        if self._sip_media is not None:
            self._sip_media.close()
        self.ended.set_result(ended)
        self.notify(
            {
                "type": "hangup",
                "id": self.id,
                "code": ended.code,
                "reason": ended.reason,
                "by": ended.by,
            }
        )
        log.info("%sended: %d %s (%s)", self.prefix, ended.code, ended.reason, ended.by)
        if dialog is not None:
            await self.ua.bye(dialog)
        if self._browser is not None:
            await self._browser.close()
        self._set_state(CallState.ENDED)
