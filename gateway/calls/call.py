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
from collections.abc import Callable, Coroutine
from typing import Any

from sipmessage import URI, Request, Response

import sdp
from gateway.calls import events as ev
from gateway.calls import features, referred, reoffer
from gateway.calls.base import CallError as CallError
from gateway.calls.base import Redirector
from gateway.calls.base import Route as Route
from gateway.calls.events import CallEnded as CallEnded
from gateway.calls.events import Effect
from gateway.calls.features import Hold, SessionTimer, Transfer, TransferState
from gateway.calls.machine import CallCore, CallKind, CoreDriven, Timeouts
from gateway.calls.machine import CallState as CallState
from gateway.calls.media_state import SipMediaState
from gateway.calls.page import Dtmf, Hangup, Held, PageMessage, SessionHost
from gateway.config import Config, Trunk
from gateway.media.bridge import Bridge
from gateway.media.browser_leg import BrowserLeg
from gateway.media.dtmf import info_body, parse_info_body
from gateway.media.ports import PortAllocator
from gateway.media.sip_leg import SipMediaLeg
from gateway.sip import headers
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction
from gateway.sip.transport import Peer
from gateway.sip.ua import Redirect, UserAgent

log = logging.getLogger(__name__)

Notify = Callable[[PageMessage], None]
SDP = "application/sdp"
NO_REFER_ANSWER = features.ReferFailed(408, "No answer to REFER")


class Call(CoreDriven):
    # Set by the gateway; without one, no 3xx or REFER is followed.
    redirector: Redirector | None = None
    kind = CallKind.OUTBOUND

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
        timeouts = Timeouts(config.no_answer_timeout, config.ring_timeout)
        self._core = CallCore(self.kind, call_id, timeouts)
        self.ended: asyncio.Future[CallEnded] = asyncio.get_running_loop().create_future()
        self.prefix = f"[call {call_id[:12]}] "
        self.media = SipMediaState(config.advertised_address, 0)
        self.held_remote = False
        self._hold = Hold(call_id)
        self._transfer = Transfer(call_id)
        self._session_timer = SessionTimer(call_id)
        self._sip_media: SipMediaLeg | None = None
        self._browser: BrowserLeg | None = None
        self._bridge: Bridge | None = None
        self._dialog: Dialog | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[Any] | None = None
        self._timers: dict[str, asyncio.TimerHandle] = {}
        # Our offer in a 2xx to a re-INVITE without SDP, answered in the ACK.
        self._pending_offer: sdp.SipOffer | None = None

    # --- state and helpers ----------------------------------------------------------

    @property
    def held_local(self) -> bool:
        return self._hold.held

    def _set_state(self, state: CallState) -> None:
        # Checked against the transition table: an impossible change raises.
        self._core.move(state)

    def _fire(self, event: ev.Event) -> None:
        """An event for the call core; its effects are carried out at once."""
        self._execute(self._core.handle(event))

    def _execute(self, effects: list[Effect]) -> None:
        """Carry out what the core or a sub-machine asked for that needs no await; the
        rest (SIP requests awaited by a page request) is done by the caller."""
        for effect in effects:
            if isinstance(effect, ev.TellPage):
                self.notify(effect.message)
            elif isinstance(effect, ev.StartTimer):
                self._timer(effect.name, effect.seconds, self._timers_fire()[effect.name])
            elif isinstance(effect, ev.CancelTimer):
                self._cancel_timer(effect.name)
            elif isinstance(effect, ev.OpenMedia):
                self._watchdog = self._spawn(self._watch_rtp())
            elif isinstance(effect, ev.SendReinvite) and self._dialog is not None:
                self._spawn(self._refresh(self._dialog))
            else:
                self._execute_setup(effect)

    def _execute_setup(self, effect: Effect) -> None:
        """Effects only one kind of call asks for (inbound: 180, the answer...)."""
        log.error("%sno driver for %s", self.prefix, type(effect).__name__)

    def _timers_fire(self) -> dict[str, Callable[[], None]]:
        """What each named timer does when it fires."""
        return {
            "transfer": self._transfer_timed_out,
            "session-refresh": self._refresh_session,
            "session-expiry": self._session_expired,
        }

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

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
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

    def _on_ice_failed(self) -> None:
        if self.active:
            self._spawn_end(CallEnded(408, "Browser media connection failed", "gateway"))

    def _on_digit(self, digit: str) -> None:
        self.notify(Dtmf(self.id, digit))

    # --- page requests (subclasses add setup-specific ones) -------------------------

    def hangup(self, session: SessionHost | None = None) -> None:
        if self.active:
            self._spawn_end(CallEnded(200, "Hung up", "local"))

    def leave(self, session: SessionHost) -> None:
        """A page this call rings on went away (calls that ring override this)."""

    def accept(self, session: SessionHost, answer: str) -> None:
        raise CallError("bad-state", "only an incoming call can be accepted")

    def reject(self, session: SessionHost, code: int) -> None:
        raise CallError("bad-state", "only an incoming call can be rejected")

    def candidate(self, session: SessionHost, candidate: dict[str, Any] | None) -> None:
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
        if self._hold.pending:
            raise CallError("bad-state", "a hold or resume is in progress")
        effects = self._hold.handle(features.HoldRequested() if on else features.ResumeRequested())
        direction = next(e.direction for e in effects if isinstance(e, ev.SendReinvite))
        assert direction is not None
        response = await self._reinvite(dialog, self.media.offer(direction))
        if response is None or not 200 <= response.code < 300:
            self.media.direction = "sendrecv" if on else "sendonly"
            code = response.code if response else 408
            self._hold.handle(features.ReinviteRefused(code))
            raise CallError("bad-state", f"the far end refused the re-INVITE ({code})")
        effects = self._hold.handle(features.ReinviteAccepted())
        self._apply_remote_media()  # the answer may move the far end's address or codec
        self._execute(effects)

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
        if self._transfer.busy:
            raise CallError("bad-state", "a transfer is already in progress")
        # The REFER itself is sent here, awaited: the page's queue carries the wait.
        effects = self._transfer.handle(features.TransferRequested(to))
        self._execute([e for e in effects if not isinstance(e, ev.SendRefer)])
        try:
            response = await self.ua.refer(dialog, target)
        except asyncio.CancelledError:
            self._transfer.handle(features.TransferAbandoned())  # the page hung up
            raise
        if self._transfer.state is not TransferState.REFERRING:
            return  # a NOTIFY overtook the 202 and settled it
        if response is None or not 200 <= response.code < 300:
            failed = (
                features.ReferFailed(response.code, response.phrase)
                if response
                else NO_REFER_ANSWER
            )
            self._execute(self._transfer.handle(failed))
            return
        # The outcome comes in NOTIFYs (on_in_dialog_request); give up if none says so.
        # The target may ring for as long as we would let a call ring, then some.
        wait = self.config.no_answer_timeout + 64 * self.config.sip_t1
        self._execute(self._transfer.handle(features.ReferAccepted(wait)))

    def _transfer_timed_out(self) -> None:
        self._execute(self._transfer.handle(features.TransferTimeout()))

    def _on_refer_notify(self, request: Request) -> None:
        """RFC 3515 section 2.4.5: the NOTIFY body is a sipfrag status line."""
        line = request.body.decode(errors="replace").strip().splitlines()
        parts = line[0].split(" ", 2) if line else []
        if len(parts) < 2 or not parts[1].isdigit():
            return
        code, reason = int(parts[1]), (parts[2] if len(parts) > 2 else "")
        if not self._transfer.busy:
            log.info("%sNOTIFY of a transfer we did not make: %d", self.prefix, code)
            return
        self._execute(self._transfer.handle(features.SipfragReceived(code, reason)))
        if self._transfer.state is TransferState.DONE:
            self._spawn_end(CallEnded(200, "Transferred", "local"))

    # --- session timers (RFC 4028) --------------------------------------------------

    def _session_timer_headers(self) -> tuple[tuple[str, str], ...]:
        return self._session_timer.request_headers()

    def _take_session_timer(self, message: Request | Response, *, we_are_uac: bool) -> None:
        """Start refreshing or watching, as the Session-Expires of a 2xx or INVITE says."""
        minimum = self.config.min_session_expires
        timer = self._session_timer
        self._execute(timer.negotiate(message, we_are_uac=we_are_uac, minimum=minimum))

    def _refresh_session(self) -> None:
        if self._dialog is not None and self.active:
            self._execute(self._session_timer.handle(features.SessionRefreshDue()))

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
        self._execute(self._session_timer.handle(features.RefreshReceived()))

    def session_too_brief(self, request: Request) -> bool:
        return features.too_brief(request, self.config.min_session_expires)

    def _session_expires_header(self) -> str | None:
        expires = self._session_timer.header(we_are_uac=False)
        return None if expires is None else str(expires)

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
            reoffer.on_offer_request(self, dialog, request, tx)
        elif method == "INFO":
            digit = parse_info_body(request.headers.get("Content-Type") or "", request.body)
            tx.respond_code(200)
            if digit is not None:
                self._on_digit(digit)
        elif method == "NOTIFY":
            tx.respond_code(200)
            if self._refer_event(request):
                self._on_refer_notify(request)
        elif method == "REFER":
            referred.on_refer(self, dialog, request, tx)
        elif method == "OPTIONS":
            tx.respond_code(200)
        else:
            tx.respond_code(501)

    @staticmethod
    def _refer_event(request: Request) -> bool:
        try:
            event = headers.event(request)
        except headers.HeaderError:
            return False
        return event is not None and event.package.lower() == "refer"

    def _apply_remote_media(self) -> None:
        if self._bridge is not None and self._browser is not None:
            self._bridge_media(self._bridge.browser_codec)
        self._update_send_direction()
        held = self.media.remote_holds
        if held != self.held_remote:
            self.held_remote = held
            self.notify(Held(self.id, held, "remote"))

    def _redirected(self, uri: URI, source: Peer) -> Redirect | None:
        """Where a 3xx Contact or a Refer-To may take this call (None: nowhere)."""
        if uri.scheme not in ("sip", "sips") or self.redirector is None:
            return None
        return self.redirector.redirect(self, uri, source)

    def _credentials_withheld(self, peer: Peer, response: Response) -> None:
        if self.redirector is not None:
            self.redirector.withheld(self, peer, response)

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
        self.notify(Hangup(self.id, ended.code, ended.reason, ended.by))
        log.info("%sended: %d %s (%s)", self.prefix, ended.code, ended.reason, ended.by)
        if dialog is not None:
            await self.ua.bye(dialog)
        if self._browser is not None:
            await self._browser.close()
        self._set_state(CallState.ENDED)
