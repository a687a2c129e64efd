"""A call between two browser users of this gateway: only the signalling passes through.

The caller's offer goes to every open page of the callee, the first answer back to the
caller, and candidates both ways; media flows between the browsers (or through TURN).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from gateway.calls.call import CallEnded, CallError, CallState
from gateway.calls.inbound import Ringable, stop_ringing_others
from gateway.config import User

log = logging.getLogger(__name__)


class PeerCall:
    def __init__(
        self,
        call_id: str,
        *,
        caller: Ringable,
        caller_user: User | None,
        callee: User,
        sessions: list[Ringable],
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
        self.state = CallState.NEW
        self.history = [CallState.NEW]
        self.ended: asyncio.Future[CallEnded] = asyncio.get_running_loop().create_future()
        self._ring_timer: asyncio.TimerHandle | None = None
        self.prefix = f"[call {call_id[:12]}] "

    @property
    def active(self) -> bool:
        return not self.ended.done()

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state.value, "browser_to_browser": True}

    def _set_state(self, state: CallState) -> None:
        log.info("%s%s -> %s (browser to browser)", self.prefix, self.state, state)
        self.state = state
        self.history.append(state)

    def start(self) -> None:
        if not self.ringing:
            self._finish(
                CallEnded(480, f"{self.callee.name} is not online", "remote"), notify_callees=False
            )
            return
        caller = self.caller_user
        message: dict[str, Any] = {
            "type": "incoming",
            "id": self.id,
            "from": (caller.extension or caller.name) if caller else "anonymous",
            "sdp": self.offer,
        }
        if caller and caller.display_name:
            message["fromName"] = caller.display_name
        for session in self.ringing:
            session.adopt(self)
            session.notify(message)
        self._set_state(CallState.RINGING)
        self.caller.notify({"type": "ringing", "id": self.id, "code": 180})
        self._ring_timer = asyncio.get_running_loop().call_later(self.ring_timeout, self._no_answer)

    def _no_answer(self) -> None:
        self._finish(CallEnded(480, "No answer", "remote"))

    def accept(self, session: Any, answer: str) -> None:
        if self.state is not CallState.RINGING or session not in self.ringing:
            raise CallError("bad-state", "this call is no longer ringing here")
        if self._ring_timer is not None:
            self._ring_timer.cancel()
        self.ringing = stop_ringing_others(self, self.ringing, session)
        self._set_state(CallState.CONNECTED)
        self.caller.notify({"type": "answer", "id": self.id, "sdp": answer})
        session.notify({"type": "answer", "id": self.id})

    def reject(self, session: Any, code: int) -> None:
        if self.state is not CallState.RINGING:
            raise CallError("bad-state", "this call is no longer ringing")
        if code == 486 and len(self.ringing) > 1:
            # This page is busy; the callee's other pages may still take the call.
            self.leave(session)
            session.release(self)
            return
        reason = "Busy Here" if code == 486 else "Declined"
        self._finish(CallEnded(code, reason, "remote"))

    def candidate(self, session: Any, candidate: dict[str, Any] | None) -> None:
        """Trickle ICE between the two pages (RFC 8838): to whichever side did not send it."""
        targets = self.ringing if session is self.caller else [self.caller]
        for target in targets:
            target.notify({"type": "candidate", "id": self.id, "candidate": candidate})

    def hangup(self, session: Any = None) -> None:
        if not self.active:
            return
        if session is self.caller:
            code, reason = (
                (487, "Cancelled by caller")
                if self.state is CallState.RINGING
                else (200, "Remote party hung up")
            )
            self._finish(CallEnded(code, reason, "remote"), by_caller=True)
        else:
            code, reason = (
                (486, "Declined")
                if self.state is CallState.RINGING
                else (200, "Remote party hung up")
            )
            self._finish(CallEnded(code, reason, "remote"), by_callee=session)

    def leave(self, session: Any) -> None:
        if session in self.ringing and self.state is CallState.RINGING:
            self.ringing.remove(session)
            if not self.ringing:
                self._finish(CallEnded(480, f"{self.callee.name} is not online", "remote"))

    async def send_dtmf(self, digits: str) -> None:
        raise CallError("bad-state", "browser-to-browser calls send DTMF in the page itself")

    async def hold(self, on: bool) -> None:
        raise CallError("bad-state", "hold is not relayed on browser-to-browser calls yet")

    async def transfer(self, to: str, target: Any) -> None:
        raise CallError("bad-state", "transfer is not possible on browser-to-browser calls")

    def _finish(
        self,
        ended: CallEnded,
        *,
        notify_callees: bool = True,
        by_caller: bool = False,
        by_callee: Any = None,
    ) -> None:
        if self.ended.done():
            return
        if self._ring_timer is not None:
            self._ring_timer.cancel()
        self._set_state(CallState.ENDED)
        message = {"type": "hangup", "id": self.id, "code": ended.code, "reason": ended.reason}
        self.caller.notify({**message, "by": "local" if by_caller else ended.by})
        if notify_callees:
            for session in self.ringing:
                session.notify({**message, "by": "local" if session is by_callee else ended.by})
        for session in self.ringing:
            session.release(self)
        self.ended.set_result(ended)

    async def close(self, reason: str = "Gateway shutting down") -> None:
        self._finish(CallEnded(503, reason, "gateway"))
