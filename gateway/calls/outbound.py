"""A call from the page to the SIP side: the browser's offer becomes an INVITE."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from sipmessage import URI, Address

import sdp
from gateway.calls import events as ev
from gateway.calls.call import Call, CallEnded, CallState, Notify, Route
from gateway.calls.machine import CallKind
from gateway.calls.page import CallFailed, SessionHost
from gateway.calls.timing import SetupTimes
from gateway.config import Config, User
from gateway.dialplan import credential_hosts
from gateway.media.browser_leg import BrowserLeg, BrowserMediaError
from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.sip.ua import Answered, Failed, OutgoingInvite, Provisional, UserAgent

log = logging.getLogger(__name__)


class OutboundCall(Call):
    kind = CallKind.OUTBOUND

    def __init__(
        self,
        call_id: str,
        *,
        to: str,
        offer: str,
        route: Route,
        ua: UserAgent,
        config: Config,
        ports: PortAllocator,
        notify: Notify,
        user: User | None = None,
        timings: SetupTimes | None = None,
    ) -> None:
        super().__init__(
            call_id, ua=ua, config=config, ports=ports, notify=notify, account=route.trunk
        )
        self.to = to
        self.offer = offer
        self.route = route
        self.user = user
        self._invite: OutgoingInvite | None = None
        self._sip_offer: sdp.SipOffer | None = None
        self._browser_answer = ""
        self._no_answer_fired = False
        self._local_hangup = False
        self._timings = timings
        self._offer_at = time.monotonic()  # the page's `call` has just been read

    def start(self) -> None:
        self._spawn(self._run())

    async def _run(self) -> None:
        try:
            await self._dial()
        except asyncio.CancelledError:
            await self._end(CallEnded(503, "Gateway shutting down", "gateway"))
            raise
        except Exception:
            log.exception("%scall failed", self.prefix)
            await self._end(CallEnded(500, "Gateway error", "gateway"))

    def _from_address(self) -> Address:
        """Caller ID: the user's number and name, on the account's domain."""
        trunk = self.route.trunk
        domain = trunk.domain if trunk else self.config.advertised_address
        user = self.user
        number = (user.caller_id if user else None) or (trunk.from_user if trunk else None)
        name = (user.display_name or "") if user else ""
        return Address(uri=URI(scheme="sip", user=number or "sipgw", host=domain), name=name)

    async def _dial(self) -> None:
        try:
            media = await self._open_sip_media()
        except (PortsExhausted, OSError) as exc:
            if await self._ended_during_setup():
                return  # hung up (or the page left) while the port was being opened
            log.warning("%sno RTP port: %s", self.prefix, exc)
            await self._end(CallEnded(503, "No media port available", "gateway"))
            return
        if await self._ended_during_setup():
            # Hung up while the port was being opened: no INVITE for an ended call (the
            # transition table refuses ENDED -> CALLING).
            return
        try:
            self._sip_offer = sdp.browser_offer_to_sip(
                self.offer,
                address=self.config.advertised_address,
                port=media.port,
                session_id=self.media.session_id,
                transcodable=sdp.SUPPORTED_CODECS,
                telephone_event=True,
            )
        except sdp.SdpError as exc:
            self.notify(CallFailed(self.id, "bad-sdp", str(exc)))
            await self._end(CallEnded(488, f"Unusable offer: {exc}", "gateway"))
            return
        trunk = self.route.trunk
        from_address = self._from_address()
        headers: list[tuple[str, str]] = [("Supported", "timer")]
        if self.config.session_expires:
            # RFC 4028: the far end ends the call if we die; the refresher is its choice.
            headers.append(("Session-Expires", str(self.config.session_expires)))
        if trunk is not None and trunk.asserted_identity:
            headers.append(
                ("P-Asserted-Identity", str(Address(uri=from_address.uri, name=from_address.name)))
            )
        invite = OutgoingInvite(
            self.ua,
            target=self.route.target,
            peer=self.route.peer,
            from_address=from_address,
            to_address=Address(uri=self.route.target),
            sdp=self._sip_offer.sdp.encode(),
            credentials=trunk.credentials if trunk else None,
            on_provisional=self._on_provisional,
            extra_headers=tuple(headers),
            on_redirect=self._redirected,
            credential_hosts=credential_hosts(trunk) if trunk else (),
            on_credentials_withheld=self._credentials_withheld,
        )
        self._invite = invite
        self._fire(ev.Dialled())  # calling; Timer B of the page's wait: no_answer_timeout
        outcome = await invite.run()
        if self._timings is not None and invite.first_sent_at is not None:
            self._timings.record("offer_to_invite", invite.first_sent_at - self._offer_at)
        self._cancel_timer("no-answer")
        if isinstance(outcome, Failed):
            await self._on_failed(outcome)
            return
        await self._on_answered(outcome)

    def _timers_fire(self) -> dict[str, Callable[[], None]]:
        return {**super()._timers_fire(), "no-answer": self._on_no_answer}

    def _on_no_answer(self) -> None:
        log.info("%sno answer after %.0f s", self.prefix, self.config.no_answer_timeout)
        self._no_answer_fired = True
        if self._invite is not None:
            self._invite.cancel()

    def _on_provisional(self, provisional: Provisional) -> None:
        if not self.active:
            return
        if self.state is CallState.CALLING:
            self._fire(ev.ProvisionalReceived(provisional.code))
        if provisional.sdp is not None:
            # Early media (RFC 3960): bridge the network's ringback before the answer.
            self._spawn(self._early_media(provisional.sdp))

    async def _early_media(self, body: bytes) -> None:
        first = self._browser is None
        try:
            answer = await self._connect_media(body)
        except (sdp.SdpError, BrowserMediaError) as exc:
            if not await self._ended_during_setup():
                log.info("%searly media not usable: %s", self.prefix, exc)
            return
        if await self._ended_during_setup():
            return
        if first and self.active and self.state in (CallState.CALLING, CallState.RINGING):
            self._fire(ev.EarlyMediaReady(answer))

    async def _connect_media(self, body: bytes) -> str:
        """Bridge to the SIP side's latest SDP (183 or 200); the browser leg is made once,
        so a 200 whose SDP differs from the 183's changes only the SIP side."""
        assert self._sip_offer is not None
        self.media.take_answer(body.decode("utf-8", errors="replace"), self._sip_offer)
        assert self.media.codec is not None
        if self._browser is None:
            browser_codec = sdp.browser_codec_for(self.offer, self.media.codec)
            self._browser = BrowserLeg(self.config.ice_servers, log_prefix=self.prefix)
            self._browser.on_failed = self._on_ice_failed
            self._browser_answer = await self._browser.answer(self.offer, browser_codec)
            if self.ended.done():
                return ""  # the caller checks; no bridge for an ended call
            self._bridge_media(browser_codec)
        else:
            self._apply_remote_media()
        return self._browser_answer

    async def _on_answered(self, outcome: Answered) -> None:
        answered_at = time.monotonic()
        if self.ended.done():
            # The call ended (ICE failure, shutdown) while the 200 was on its way.
            await self.ua.bye(outcome.dialog)
            return
        self._dialog = outcome.dialog
        self.ua.register_dialog(outcome.dialog, self)
        if not self.active:
            # Hung up while the 200 was on its way: confirm, then end.
            await self._end(CallEnded(487, "Cancelled", "local"))
            return
        try:
            answer = await self._connect_media(outcome.sdp)
        except (sdp.SdpError, BrowserMediaError) as exc:
            if await self._ended_during_setup():
                return
            log.warning("%sunusable answer: %s", self.prefix, exc)
            self.notify(CallFailed(self.id, "bad-sdp", str(exc)))
            await self._end(CallEnded(488, f"Unusable SDP answer: {exc}", "gateway"))
            return
        if await self._ended_during_setup() or not self.active:
            return
        if outcome.response is not None:
            self._take_session_timer(outcome.response, we_are_uac=True)
        self._fire(ev.AnsweredReceived(answer))
        if self._timings is not None:
            self._timings.record("ok_to_answer", time.monotonic() - answered_at)

    async def _on_failed(self, failed: Failed) -> None:
        if self._local_hangup:
            await self._end(CallEnded(487, "Cancelled", "local"))
        elif self._no_answer_fired:
            await self._end(CallEnded(408, "No answer", "remote"))
        else:
            await self._end(CallEnded(failed.code, failed.reason, "remote"))

    def hangup(self, session: SessionHost | None = None) -> None:
        """The browser hung up: CANCEL while ringing, BYE once answered."""
        if not self.active:
            return
        self._local_hangup = True
        if self._dialog is None and self._invite is not None:
            self._set_state(CallState.ENDING)
            self._invite.cancel()  # _dial() ends the call when the 487 arrives
            return
        super().hangup(session)

    def _cancel_setup(self) -> None:
        if self._invite is not None:
            self._invite.cancel()  # no-op unless the INVITE is still pending

    async def close(self, reason: str = "Gateway shutting down") -> None:
        if self.active and self._dialog is None and self._invite is not None:
            # Still ringing: CANCEL and give the 487 a moment, so the peer stops ringing.
            self._local_hangup = True
            self._invite.cancel()
            try:
                await asyncio.wait_for(asyncio.shield(self.ended), 2 * self.config.sip_t1 * 64)
            except TimeoutError:
                pass
        await super().close(reason)
