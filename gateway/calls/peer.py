"""A call between two browser users of this gateway: only the signalling passes through.

The caller's offer goes to every open page of the callee, the first answer back to the
caller, and candidates both ways; media flows between the browsers (or through TURN).
Its states move by the browser-to-browser table of the call core (machine.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from sipmessage import URI

from gateway.calls import events as ev
from gateway.calls.call import CallError
from gateway.calls.events import CallEnded, Effect
from gateway.calls.inbound import stop_ringing_others
from gateway.calls.machine import CallCore, CallKind, CallState, CoreDriven, Timeouts
from gateway.calls.page import Candidate, Hangup, Incoming, SessionHost
from gateway.config import User

log = logging.getLogger(__name__)


class PeerCall(CoreDriven):
    def __init__(
        self,
        call_id: str,
        *,
        caller: SessionHost,
        caller_user: User | None,
        callee: User,
        sessions: list[SessionHost],
        offer: str,
        ring_timeout: float,
    ) -> None:
        self.id = call_id
        self.caller = caller
        self.caller_user = caller_user
        self.callee = callee
        self.ringing = list(sessions)
        self.offer = offer
        self.ring_timeout = ring_timeout
        self._core = CallCore(CallKind.PEER, call_id, Timeouts(ring=ring_timeout))
        self.ended: asyncio.Future[CallEnded] = asyncio.get_running_loop().create_future()
        self._ring_timer: asyncio.TimerHandle | None = None
        # Who hung up, so that page hears "local" and the others the core's `by`.
        self._hung_up_by: SessionHost | None = None
        self.prefix = f"[call {call_id[:12]}] "

    @property
    def active(self) -> bool:
        return not self.ended.done()

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state.value, "browser_to_browser": True}

    def _handle(self, event: ev.Event, session: SessionHost | None = None) -> None:
        self._run(self._core.handle(event), session)

    def _run(self, effects: list[Effect], session: SessionHost | None) -> None:
        for effect in effects:
            if isinstance(effect, ev.TellPage) and not isinstance(effect.message, Hangup):
                # (Hangup: `_release` tells each page, with who hung up from its view.)
                targets = [self.caller] if effect.to is ev.Audience.PAGES else self.ringing
                for target in targets:
                    target.notify(effect.message)
            elif isinstance(effect, ev.StartTimer):
                loop = asyncio.get_running_loop()
                self._ring_timer = loop.call_later(effect.seconds, self._no_answer)
            elif isinstance(effect, ev.CancelTimer | ev.CancelAllTimers):
                if self._ring_timer is not None:
                    self._ring_timer.cancel()
            elif isinstance(effect, ev.StopRingingOthers):
                assert session is not None
                self.ringing = stop_ringing_others(self, self.ringing, session)
            elif isinstance(effect, ev.Release):
                self._release(effect.ended)

    def start(self) -> None:
        if not self.ringing:
            ended = CallEnded(480, f"{self.callee.name} is not online", "remote")
            self._handle(ev.SetupFailed(ended))
            return
        caller = self.caller_user
        number = (caller.extension or caller.name) if caller else "anonymous"
        name = (caller.display_name or "") if caller else ""
        for session in self.ringing:
            session.adopt(self)
            session.notify(Incoming(self.id, number, self.offer, name))
        self._handle(ev.PagesRung())

    def _no_answer(self) -> None:
        if self.state is CallState.RINGING:
            self._handle(ev.RingTimeout())

    def accept(self, session: SessionHost, answer: str) -> None:
        if self.state is not CallState.RINGING or session not in self.ringing:
            raise CallError("bad-state", "this call is no longer ringing here")
        self._handle(ev.PageAccept(answer), session)

    def reject(self, session: SessionHost, code: int) -> None:
        if self.state is not CallState.RINGING:
            raise CallError("bad-state", "this call is no longer ringing")
        if code == 486 and len(self.ringing) > 1:
            # This page is busy; the callee's other pages may still take the call.
            self.leave(session)
            session.release(self)
            return
        self._handle(ev.PageReject(code))

    def candidate(self, session: SessionHost, candidate: dict[str, Any] | None) -> None:
        """Trickle ICE between the two pages (RFC 8838): to whichever side did not send it."""
        targets = self.ringing if session is self.caller else [self.caller]
        for target in targets:
            target.notify(Candidate(self.id, candidate))

    def hangup(self, session: SessionHost | None = None) -> None:
        if not self.active:
            return
        self._hung_up_by = session
        self._handle(ev.PageHangup() if session is self.caller else ev.CalleeHangup())

    def leave(self, session: SessionHost) -> None:
        if session in self.ringing and self.state is CallState.RINGING:
            self.ringing.remove(session)
            if not self.ringing:
                self._handle(ev.PagesGone(self.callee.name))

    async def send_dtmf(self, digits: str) -> None:
        raise CallError("bad-state", "browser-to-browser calls send DTMF in the page itself")

    async def hold(self, on: bool) -> None:
        raise CallError("bad-state", "hold is not relayed on browser-to-browser calls yet")

    async def transfer(self, to: str, target: URI) -> None:
        raise CallError("bad-state", "transfer is not possible on browser-to-browser calls")

    def _release(self, ended: CallEnded) -> None:
        """ENDING: tell both sides, let the pages forget the call; then ENDED."""
        if self.ended.done():
            return
        by_caller = self._hung_up_by is self.caller and self._hung_up_by is not None
        self.caller.notify(self._hangup(ended, "local" if by_caller else ended.by))
        for session in self.ringing:
            by = "local" if session is self._hung_up_by else ended.by
            session.notify(self._hangup(ended, by))
        for session in self.ringing:
            session.release(self)
        self.ended.set_result(ended)
        self._core.handle(ev.Released())

    def _hangup(self, ended: CallEnded, by: str) -> Hangup:
        return Hangup(self.id, ended.code, ended.reason, by)

    async def close(self, reason: str = "Gateway shutting down") -> None:
        if self.active:
            self._handle(ev.Shutdown(reason))
