"""An outbound call: one browser leg, one SIP dialog and one bridge, as a B2BUA.

Every way out (either side hangs up, SIP failure, no answer, bad SDP, ICE failure,
WebSocket closed, shutdown) goes through `_end`, which sends what SIP needs (CANCEL or
BYE), tells the browser why, and releases the RTP ports, the peer connection and tasks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sipmessage import URI, Address, Request

import sdp
from gateway.config import Config, Trunk
from gateway.media.bridge import Bridge
from gateway.media.browser_leg import BrowserLeg, BrowserMediaError
from gateway.media.ports import PortAllocator, PortsExhausted
from gateway.media.sip_leg import SipMediaLeg
from gateway.sip import message as sipmsg
from gateway.sip.dialog import Dialog
from gateway.sip.transaction import ServerTransaction
from gateway.sip.transport import Peer
from gateway.sip.ua import Answered, Failed, OutgoingInvite, Provisional, UserAgent

log = logging.getLogger(__name__)

Notify = Callable[[dict[str, Any]], None]


class CallState(StrEnum):
    NEW = "new"
    CALLING = "calling"
    RINGING = "ringing"
    EARLY_MEDIA = "early-media"
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
    """Where the call goes: the Request-URI and the next hop, plus credentials."""

    target: URI
    peer: Peer
    trunk: Trunk | None


class Call:
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
        from_user: str = "sipgw",
    ) -> None:
        self.id = call_id
        self.to = to
        self.offer = offer
        self.route = route
        self.ua = ua
        self.config = config
        self.ports = ports
        self.notify = notify
        self.from_user = from_user
        self.state = CallState.NEW
        self.history: list[CallState] = [CallState.NEW]
        self.ended: asyncio.Future[CallEnded] = asyncio.get_running_loop().create_future()
        self.prefix = f"[call {call_id[:12]}] "
        self._sip_media: SipMediaLeg | None = None
        self._browser: BrowserLeg | None = None
        self._bridge: Bridge | None = None
        self._invite: OutgoingInvite | None = None
        self._dialog: Dialog | None = None
        self._sip_offer: sdp.SipOffer | None = None
        self._browser_answer = ""
        self._no_answer: asyncio.TimerHandle | None = None
        self._no_answer_fired = False
        self._local_hangup = False
        self._task: asyncio.Task[None] | None = None

    # --- state ---------------------------------------------------------------------

    def _set_state(self, state: CallState) -> None:
        if state is self.state:
            return
        log.info("%s%s -> %s", self.prefix, self.state, state)
        self.state = state
        self.history.append(state)

    @property
    def active(self) -> bool:
        return self.state not in (CallState.ENDING, CallState.ENDED)

    # --- outbound setup ---------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"call-{self.id}")

    async def _run(self) -> None:
        try:
            await self._dial()
        except asyncio.CancelledError:
            await self._end(CallEnded(503, "Gateway shutting down", "gateway"))
            raise
        except Exception:
            log.exception("%scall failed", self.prefix)
            await self._end(CallEnded(500, "Gateway error", "gateway"))

    async def _dial(self) -> None:
        media = SipMediaLeg(self.config.sip_bind, self.ports, log_prefix=self.prefix)
        self._sip_media = media
        try:
            await media.open()
        except (PortsExhausted, OSError) as exc:
            log.warning("%sno RTP port: %s", self.prefix, exc)
            await self._end(CallEnded(503, "No media port available", "gateway"))
            return
        try:
            self._sip_offer = sdp.browser_offer_to_sip(
                self.offer,
                address=self.config.advertised_address,
                port=media.port,
                transcodable=sdp.SUPPORTED_CODECS,
            )
        except sdp.SdpError as exc:
            self.notify({"type": "error", "id": self.id, "code": "bad-sdp", "message": str(exc)})
            await self._end(CallEnded(488, f"Unusable offer: {exc}", "gateway"))
            return
        trunk = self.route.trunk
        domain = trunk.domain if trunk else self.config.advertised_address
        from_user = trunk.from_user if trunk else self.from_user
        invite = OutgoingInvite(
            self.ua,
            target=self.route.target,
            peer=self.route.peer,
            from_address=Address(uri=URI(scheme="sip", user=from_user, host=domain)),
            to_address=Address(uri=self.route.target),
            sdp=self._sip_offer.sdp.encode(),
            credentials=trunk.credentials if trunk else None,
            on_provisional=self._on_provisional,
        )
        self._invite = invite
        self._set_state(CallState.CALLING)
        self._no_answer = asyncio.get_running_loop().call_later(
            self.config.no_answer_timeout, self._on_no_answer
        )
        outcome = await invite.run()
        self._no_answer.cancel()
        if isinstance(outcome, Failed):
            await self._on_failed(outcome)
            return
        await self._on_answered(outcome)

    def _on_no_answer(self) -> None:
        log.info("%sno answer after %.0f s", self.prefix, self.config.no_answer_timeout)
        self._no_answer_fired = True
        if self._invite is not None:
            self._invite.cancel()

    def _on_provisional(self, provisional: Provisional) -> None:
        if not self.active:
            return
        if self.state is CallState.CALLING:
            self._set_state(CallState.RINGING)
            self.notify({"type": "ringing", "id": self.id, "code": provisional.code})
        if provisional.sdp is not None and self._browser is None:
            # Early media (RFC 3960): bridge the network's ringback before the answer.
            task = asyncio.ensure_future(self._early_media(provisional.sdp))
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _early_media(self, body: bytes) -> None:
        try:
            answer = await self._connect_media(body)
        except (sdp.SdpError, BrowserMediaError) as exc:
            log.info("%searly media not usable: %s", self.prefix, exc)
            return
        if self.active and self.state in (CallState.CALLING, CallState.RINGING):
            self._set_state(CallState.EARLY_MEDIA)
            self.notify({"type": "progress", "id": self.id, "sdp": answer})

    async def _connect_media(self, body: bytes) -> str:
        """Set up the browser leg and bridge for the SIP side's SDP; return the browser answer."""
        assert self._sip_offer is not None and self._sip_media is not None
        text = body.decode("utf-8", errors="replace")
        remote = sdp.parse_remote(text)
        sip_codec = sdp.answer_codec(remote, self._sip_offer)
        browser_codec = sdp.browser_codec_for(self.offer, sip_codec)
        if self._browser is None:
            self._browser = BrowserLeg(self.config.ice_servers, log_prefix=self.prefix)
            self._browser.on_failed = self._on_ice_failed
            answer = await self._browser.answer(self.offer, browser_codec)
            self._browser_answer = answer
        self._sip_media.set_remote(remote.address, remote.port)
        if self._bridge is None:
            self._bridge = Bridge(
                self._browser, self._sip_media, browser_codec, sip_codec, log_prefix=self.prefix
            )
        return self._browser_answer

    async def _on_answered(self, outcome: Answered) -> None:
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
            log.warning("%sunusable answer: %s", self.prefix, exc)
            self.notify({"type": "error", "id": self.id, "code": "bad-sdp", "message": str(exc)})
            await self._end(CallEnded(488, f"Unusable SDP answer: {exc}", "gateway"))
            return
        if not self.active:
            return
        self._set_state(CallState.CONNECTED)
        self.notify({"type": "answer", "id": self.id, "sdp": answer})

    async def _on_failed(self, failed: Failed) -> None:
        if self._local_hangup:
            await self._end(CallEnded(487, "Cancelled", "local"))
        elif self._no_answer_fired:
            await self._end(CallEnded(408, "No answer", "remote"))
        else:
            await self._end(CallEnded(failed.code, failed.reason, "remote"))

    def _on_ice_failed(self) -> None:
        if self.active:
            self._spawn_end(CallEnded(408, "Browser media connection failed", "gateway"))

    # --- requests from the browser --------------------------------------------------

    def hangup(self) -> None:
        """The browser hung up: CANCEL while ringing, BYE once answered."""
        if not self.active:
            return
        self._local_hangup = True
        if self._dialog is None and self._invite is not None:
            self._set_state(CallState.ENDING)
            self._invite.cancel()  # _dial() ends the call when the 487 arrives
            return
        self._spawn_end(CallEnded(200, "Hung up", "local"))

    async def send_dtmf(self, digits: str) -> bool:
        """SIP INFO application/dtmf-relay, understood by Asterisk, FreeSWITCH and most PBXs."""
        if self._dialog is None or self.state is not CallState.CONNECTED:
            return False
        for digit in digits:
            body = f"Signal={digit}\r\nDuration=160\r\n".encode()
            await self.ua.request_in_dialog(
                self._dialog, "INFO", body=body, content_type="application/dtmf-relay"
            )
        return True

    # --- requests from the SIP side -------------------------------------------------

    def on_bye(self, dialog: Dialog) -> None:
        self._dialog = None  # the UA answered the BYE and closed the dialog
        self._spawn_end(CallEnded(200, "Remote party hung up", "remote"))

    def on_in_dialog_request(self, dialog: Dialog, request: Request, tx: ServerTransaction) -> None:
        if request.method == "INVITE" and self._sip_offer is not None:
            # A session refresh or re-INVITE: keep the current session description.
            response_sdp = self._sip_offer.sdp.encode()
            response = sipmsg.make_response(
                request, 200, to_tag=dialog.local_tag, body=response_sdp
            )
            response.headers.set("Content-Type", "application/sdp")
            response.headers.set("Contact", str(dialog.contact))
            tx.respond(response)
            return
        if request.method in ("INFO", "OPTIONS", "UPDATE", "NOTIFY"):
            tx.respond_code(200)
            return
        tx.respond_code(501)

    # --- ending ---------------------------------------------------------------------

    def _spawn_end(self, ended: CallEnded) -> None:
        task = asyncio.ensure_future(self._end(ended))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def close(self, reason: str = "Gateway shutting down") -> None:
        """Shutdown or WebSocket loss: end the call whatever its state, and wait for it."""
        if self.active or self.state is CallState.ENDING:
            self._local_hangup = True
            if self._dialog is None and self._invite is not None and not self.ended.done():
                self._invite.cancel()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self.ended), 2 * self.config.sip_t1 * 64)
            if not self.ended.done():
                await self._end(CallEnded(503, reason, "gateway"))
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _end(self, ended: CallEnded) -> None:
        if self.ended.done():
            return
        self._set_state(CallState.ENDING)
        if self._no_answer is not None:
            self._no_answer.cancel()
        dialog, self._dialog = self._dialog, None
        if dialog is None and self._invite is not None:
            self._invite.cancel()  # no-op unless the INVITE is still pending
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
