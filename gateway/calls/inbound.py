"""A call from the SIP side to a browser user: every open page of the user rings, the
first `accept` wins, and the gateway answers the INVITE with the SIP side of that page."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import sdp
from gateway.calls import events as ev
from gateway.calls.call import Call, CallEnded, CallError, CallState
from gateway.calls.events import Effect
from gateway.calls.machine import CallKind
from gateway.calls.page import (
    CallFailed,
    Hangup,
    Incoming,
    PageCall,
    PageMessage,
    SessionHost,
)
from gateway.config import Config, Trunk, User
from gateway.media.browser_leg import BrowserLeg, BrowserMediaError
from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import TransactionTimeout
from gateway.sip.ua import IncomingInvite, UserAgent

log = logging.getLogger(__name__)


# The page sessions a call rings on.
Ringable = SessionHost

ANSWERED_ELSEWHERE = (200, "Answered elsewhere", "remote")


def stop_ringing_others(
    call: PageCall, ringing: list[SessionHost], answered: SessionHost
) -> list[SessionHost]:
    """One page answered: the others stop ringing and forget the call. Returns what still
    rings: the page that answered."""
    for other in ringing:
        if other is not answered:
            other.notify(Hangup(call.id, *ANSWERED_ELSEWHERE))
            other.release(call)
    return [answered]


def caller_of(incoming: IncomingInvite) -> tuple[str, str]:
    """(number or user, display name) of whoever is calling."""
    address = incoming.request.from_address
    return (address.uri.user or address.uri.host), address.name.strip('"')


class InboundCall(Call):
    kind = CallKind.INBOUND

    def __init__(
        self,
        call_id: str,
        incoming: IncomingInvite,
        *,
        user: User,
        sessions: list[Ringable],
        ua: UserAgent,
        config: Config,
        ports: PortAllocator,
        account: Trunk | None,
    ) -> None:
        super().__init__(
            call_id, ua=ua, config=config, ports=ports, notify=self._broadcast, account=account
        )
        self.incoming = incoming
        self.user = user
        self.ringing: list[Ringable] = list(sessions)
        self._remote_offer: sdp.RemoteMedia | None = None
        self._answering: SessionHost | None = None  # the page that accepted
        incoming.on_cancel = self._on_caller_cancel

    def _broadcast(self, message: PageMessage) -> None:
        for session in self.ringing:
            session.notify(message)

    def _reject(self, code: int, reason: str | None = None) -> None:
        if self.incoming.tx.last_response is None or self.incoming.tx.last_response.code < 200:
            self.incoming.reject(code, reason)

    async def start(self) -> None:
        # Known to its pages from the start: a page that goes away during set-up leaves it.
        for session in self.ringing:
            session.adopt(self)
        refused = self._refused()
        if refused is not None:
            await self._end(refused)
            return
        try:
            await self._open_sip_media()
        except (PortsExhausted, OSError):
            if await self._ended_during_setup():
                return  # cancelled while the port was being opened
            self._reject(503)
            await self._end(CallEnded(503, "No media port available", "gateway"))
            return
        if await self._ended_during_setup():
            return
        # Offer the page the far end's codec first, so the common case is relayed as is.
        names = [c.name for c in self._remote_offer.codecs] if self._remote_offer else []
        names += [n for n in sdp.SUPPORTED_CODECS if n not in names]
        self._browser = BrowserLeg(self.config.ice_servers, log_prefix=self.prefix)
        self._browser.on_failed = self._on_ice_failed
        try:
            page_offer = await self._browser.offer(names)
        except BrowserMediaError as exc:
            if await self._ended_during_setup():
                return  # _end closed the peer connection under the offer
            log.warning("%s%s", self.prefix, exc)
            self._reject(500)
            await self._end(CallEnded(500, "Gateway error", "gateway"))
            return
        if await self._ended_during_setup():
            return  # e.g. CANCEL while the peer connection made its offer
        number, name = caller_of(self.incoming)
        self.notify(Incoming(self.id, number, page_offer, name))
        self._fire(ev.PagesRung())  # ringing: 180 to the caller, ring_timeout started

    def _refused(self) -> CallEnded | None:
        """An INVITE refused before anything is set up: its session interval or its SDP."""
        if self.session_too_brief(self.incoming.request):
            minimum = str(self.config.min_session_expires)
            self.incoming.reject(422, "Session Interval Too Small", headers=(("Min-SE", minimum),))
            return CallEnded(422, "Session interval too small", "remote")
        offer = self.incoming.sdp
        if offer is not None:
            try:
                self._remote_offer = sdp.parse_remote(offer.decode(errors="replace"))
            except sdp.SdpError as exc:
                log.info("%sunusable offer: %s", self.prefix, exc)
                self._reject(488)
                return CallEnded(488, f"Unusable offer: {exc}", "remote")
        return None

    def _execute_setup(self, effect: Effect) -> None:
        if isinstance(effect, ev.SendRinging):
            self.incoming.ring(effect.code)
        elif isinstance(effect, ev.StopRingingOthers) and self._answering is not None:
            self.ringing = stop_ringing_others(self, self.ringing, self._answering)
        elif isinstance(effect, ev.SendAnswer):
            self._spawn(self._complete(effect.sdp))  # the 200 once the page's answer is in
        else:
            super()._execute_setup(effect)

    def _timers_fire(self) -> dict[str, Callable[[], None]]:
        return {**super()._timers_fire(), "ring": self._on_ring_timeout}

    def _on_ring_timeout(self) -> None:
        log.info("%snobody answered in %.0f s", self.prefix, self.config.ring_timeout)
        self._reject(480, "Temporarily Unavailable (no answer)")
        self._spawn_end(CallEnded(480, "No answer", "gateway"))

    def _on_caller_cancel(self) -> None:
        self._spawn_end(CallEnded(487, "Cancelled by caller", "remote"))

    # --- page requests ---------------------------------------------------------------

    def accept(self, session: SessionHost, answer: str) -> None:
        if self.state is not CallState.RINGING or session not in self.ringing:
            raise CallError("bad-state", "this call is no longer ringing here")
        self._answering = session
        self._fire(ev.PageAccept(answer))

    async def _complete(self, page_answer: str) -> None:
        assert self._browser is not None
        try:
            browser_codec = await self._browser.accept_answer(page_answer)
        except BrowserMediaError as exc:
            if await self._ended_during_setup():
                return
            self.notify(CallFailed(self.id, "bad-sdp", str(exc)))
            self._reject(488)
            await self._end(CallEnded(488, str(exc), "local"))
            return
        if await self._ended_during_setup():
            return
        try:
            dialog = await self._answer_sip(browser_codec)
        except TransactionTimeout:
            await self._end(CallEnded(408, "The caller never confirmed the answer", "remote"))
            return
        except sdp.SdpError as exc:
            await self._end(CallEnded(488, f"Unusable SDP in the ACK: {exc}", "remote"))
            await self._bye_late(self.incoming.dialog)
            return
        except asyncio.CancelledError:
            # close() (shutdown, socket gone) while the 200 waited for its ACK.
            self.ua.spawn(self.ua.bye(self.incoming.dialog))
            raise
        if await self._ended_during_setup():
            # Ended (page hang-up, CANCEL, socket gone) while the 200 waited for its ACK:
            # the dialog exists now, and only a BYE ends it at the far end.
            await self._bye_late(dialog)
            return
        if dialog is None or not self.active:
            return
        self._bridge_media(browser_codec)
        self._fire(ev.AckReceived())  # connected: the watchdog starts, the page is told

    async def _bye_late(self, dialog: Dialog | None) -> None:
        """A dialog the 200 made after `_end` ran (which then had none to end)."""
        self._dialog = None
        if dialog is not None:
            await self.ua.bye(dialog)  # no-op if _end already ended it

    async def _answer_sip(self, browser_codec: sdp.Codec) -> Dialog:
        incoming = self.incoming
        self._take_session_timer(incoming.request, we_are_uac=False)
        headers: list[tuple[str, str]] = []
        expires = self._session_expires_header()
        if expires:
            headers += [("Session-Expires", expires), ("Require", "timer")]
        remote = self._remote_offer
        if remote is not None:
            # Keep the browser's codec on the SIP side when the caller offered it: no transcoding.
            self.media.codec = next(
                (c for c in remote.codecs if c.same_format(browser_codec)), remote.codec
            )
            assert incoming.sdp is not None
            answer = self.media.answer(incoming.sdp.decode(errors="replace"))
            dialog = await incoming.accept(answer.encode(), self, headers=tuple(headers))
        else:
            # Late offer (RFC 3261 section 13.2.1): we offer in the 200, the ACK answers.
            offer = self.media.full_offer(
                sdp.Codec(
                    browser_codec.name,
                    browser_codec.clock_rate,
                    browser_codec.channels,
                    browser_codec.payload_type if browser_codec.payload_type < 96 else 111,
                    browser_codec.fmtp,
                )
            )
            dialog = await incoming.accept(offer.sdp.encode(), self, headers=tuple(headers))
            ack = incoming.ack
            try:
                self.media.take_answer((ack.body if ack else b"").decode(errors="replace"), offer)
            except sdp.SdpError:
                self._dialog = dialog
                raise
        self._dialog = dialog
        return dialog

    def reject(self, session: SessionHost, code: int) -> None:
        if self.state is not CallState.RINGING:
            raise CallError("bad-state", "this call is no longer ringing")
        if code == 486 and len(self.ringing) > 1:
            # This page is busy; the user's other pages may still take the call.
            self.leave(session)
            session.release(self)
            return
        self._reject(code)
        self._spawn_end(CallEnded(code, "Declined", "local"))

    def hangup(self, session: SessionHost | None = None) -> None:
        if self.state is CallState.RINGING:
            self._reject(486)
            self._spawn_end(CallEnded(486, "Declined", "local"))
            return
        super().hangup(session)

    def leave(self, session: SessionHost) -> None:
        if session in self.ringing and self.state in (CallState.NEW, CallState.RINGING):
            self.ringing.remove(session)
            if not self.ringing:
                self._reject(480)
                self._spawn_end(CallEnded(480, "No page left to answer", "gateway"))

    def _cancel_setup(self) -> None:
        self._reject(480 if self.state is CallState.RINGING else 503)

    async def _end(self, ended: CallEnded) -> None:
        # The UA keeps the INVITE until its transaction ends (64*T1 after a 2xx), to match
        # a late CANCEL; it must not keep the call that long with it.
        self.incoming.on_cancel = None
        await super()._end(ended)
        for session in self.ringing:
            session.release(self)
