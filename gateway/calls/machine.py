"""The call core: a pure state machine, `handle(event) -> effects`.

Each kind of call (outbound, inbound, browser to browser) has an explicit transition table:
rows of (state, event) -> (next state, action). An event with no row in the call's current
state is an impossible transition: `handle` raises `IllegalTransition` and logs it, and the
state does not change. Events that may legitimately race the end of a call (a timer, ICE,
the page's hang-up, a BYE crossing ours) have explicit rows in ENDING and ENDED that do
nothing. No I/O, no clock, no asyncio: the driver carries out the effects.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from gateway.calls import events as ev
from gateway.calls.events import CallEnded, Effect, Event
from gateway.calls.page import Answer, Hangup, Progress, Ringing

log = logging.getLogger(__name__)


class CallState(StrEnum):
    NEW = "new"
    CALLING = "calling"
    RINGING = "ringing"
    EARLY_MEDIA = "early-media"
    ANSWERING = "answering"  # a page accepted an incoming call; the SIP 200 is on its way
    CONNECTED = "connected"
    ENDING = "ending"
    ENDED = "ended"


class CallKind(StrEnum):
    OUTBOUND = "outbound"
    INBOUND = "inbound"
    PEER = "browser-to-browser"


class IllegalTransition(RuntimeError):
    """An event the call's table has no row for in its current state."""

    def __init__(
        self, kind: CallKind, state: CallState, event: Event, target: CallState | None = None
    ) -> None:
        what = type(event).__name__ if target is None else f"moving to {target}"
        super().__init__(f"{kind} call: {what} is impossible in {state}")
        self.kind, self.state, self.event, self.target = kind, state, event, target


@dataclass(frozen=True)
class Timeouts:
    no_answer: float = 120.0
    ring: float = 60.0


Action = Callable[["CallCore", Event], list[Effect]]


@dataclass(frozen=True)
class Row:
    source: CallState
    event: type[Event]
    target: CallState
    action: Action


S = CallState
SETUP_OUT = (S.CALLING, S.RINGING, S.EARLY_MEDIA)
LIVE = (S.NEW, S.CALLING, S.RINGING, S.EARLY_MEDIA, S.ANSWERING, S.CONNECTED)


# --- actions --------------------------------------------------------------------------


def nothing(core: CallCore, event: Event) -> list[Effect]:
    return []


def end(ended: CallEnded, *first: Effect) -> Action:
    """End with a fixed reason, after `first` (a CANCEL, BYE or final response)."""

    def action(core: CallCore, event: Event) -> list[Effect]:
        return [*first, *core.ending(ended)]

    return action


def dialled(core: CallCore, event: Event) -> list[Effect]:
    return [ev.StartTimer("no-answer", core.timeouts.no_answer)]


def first_provisional(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.ProvisionalReceived)
    return [ev.TellPage(Ringing(core.id, event.code))]


def early_media(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.EarlyMediaReady)
    return [ev.TellPage(Progress(core.id, event.sdp))]


def answered(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.AnsweredReceived)
    return [ev.CancelTimer("no-answer"), ev.OpenMedia(), ev.TellPage(Answer(core.id, event.sdp))]


def cancel_invite(cause: CallEnded) -> Action:
    def action(core: CallCore, event: Event) -> list[Effect]:
        core.cancelled = cause
        return [ev.CancelTimer("no-answer"), ev.SendCancel()]

    return action


def invite_failed(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.InviteFailed)
    return core.ending(core.cancelled or CallEnded(event.code, event.reason, "remote"))


def answered_after_cancel(core: CallCore, event: Event) -> list[Effect]:
    """The 200 crossed our CANCEL: confirm the dialog, then end it."""
    return [ev.SendBye(), *core.ending(core.cancelled or CallEnded(487, "Cancelled", "local"))]


def setup_failed(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.SetupFailed)
    first: list[Effect] = []
    if core.kind is CallKind.INBOUND:
        first.append(ev.SendResponse(event.ended.code))
    return [*first, *core.ending(event.ended)]


def rung(core: CallCore, event: Event) -> list[Effect]:
    effects: list[Effect] = [ev.StartTimer("ring", core.timeouts.ring)]
    if core.kind is CallKind.INBOUND:
        effects.insert(0, ev.SendRinging(180))
    else:
        effects.insert(0, ev.TellPage(Ringing(core.id, 180)))
    return effects


def accepted(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.PageAccept)
    effects: list[Effect] = [ev.CancelTimer("ring"), ev.StopRingingOthers()]
    if core.kind is CallKind.INBOUND:
        return [*effects, ev.SendAnswer(event.sdp)]
    return [
        *effects,
        ev.TellPage(Answer(core.id, event.sdp)),
        ev.TellPage(Answer(core.id), ev.Audience.CALLEES),
    ]


def confirmed(core: CallCore, event: Event) -> list[Effect]:
    return [ev.OpenMedia(), ev.TellPage(Answer(core.id))]


def rejected(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.PageReject)
    if core.kind is CallKind.PEER:
        reason = "Busy Here" if event.code == 486 else "Declined"
        return core.ending(CallEnded(event.code, reason, "remote"))
    return [ev.SendResponse(event.code), *core.ending(CallEnded(event.code, "Declined", "local"))]


def shutdown(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.Shutdown)
    ended = CallEnded(503, event.reason, "gateway")
    if core.state in SETUP_OUT and core.kind is CallKind.OUTBOUND:
        return [ev.SendCancel(), *core.ending(ended)]
    if core.state in (S.NEW, S.RINGING) and core.kind is CallKind.INBOUND:
        code = 480 if core.state is S.RINGING else 503
        return [ev.SendResponse(code), *core.ending(ended)]
    if core.state in (S.CONNECTED, S.ANSWERING) and core.kind is not CallKind.PEER:
        return [ev.SendBye(), *core.ending(ended)]
    return core.ending(ended)


def refresh_failed(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.SessionRefreshFailed)
    return [ev.SendBye(), *core.ending(CallEnded(event.code, "Session refresh failed", "gateway"))]


def callee_gone(core: CallCore, event: Event) -> list[Effect]:
    assert isinstance(event, ev.PagesGone)
    return core.ending(CallEnded(480, f"{event.callee} is not online", "remote"))


def released(core: CallCore, event: Event) -> list[Effect]:
    return []


# --- tables ---------------------------------------------------------------------------

BYE = ev.SendBye()
LATE: tuple[type[Event], ...] = (
    ev.PageHangup,
    ev.ByeReceived,
    ev.CancelReceived,
    ev.IceFailed,
    ev.RtpTimeout,
    ev.RingTimeout,
    ev.NoAnswerTimeout,
    ev.SessionExpired,
    ev.AckTimeout,
    ev.PagesGone,
    ev.CalleeHangup,
    ev.Shutdown,
)


def rows(
    sources: Iterable[CallState], event: type[Event], target: CallState, action: Action
) -> list[Row]:
    return [Row(source, event, target, action) for source in sources]


def connected_rows() -> list[Row]:
    """What ends a connected SIP call, whichever way it was set up."""
    c, e = S.CONNECTED, S.ENDING
    return [
        Row(c, ev.PageHangup, e, end(CallEnded(200, "Hung up", "local"), BYE)),
        Row(c, ev.ByeReceived, e, end(CallEnded(200, "Remote party hung up", "remote"))),
        Row(c, ev.RtpTimeout, e, end(CallEnded(408, "Media timeout (no RTP)", "gateway"), BYE)),
        Row(
            c,
            ev.IceFailed,
            e,
            end(CallEnded(408, "Browser media connection failed", "gateway"), BYE),
        ),
        Row(
            c,
            ev.SessionExpired,
            e,
            end(CallEnded(408, "Session expired (no refresh)", "gateway"), BYE),
        ),
        Row(c, ev.SessionRefreshFailed, e, refresh_failed),
        Row(
            c,
            ev.AckTimeout,
            e,
            end(CallEnded(408, "No ACK for the answer to a re-INVITE", "remote"), BYE),
        ),
        Row(c, ev.TransferDone, e, end(CallEnded(200, "Transferred", "local"), BYE)),
        Row(c, ev.Shutdown, e, shutdown),
    ]


def closing_rows() -> list[Row]:
    """ENDING and ENDED: the driver's Released, and late events that change nothing."""
    table = [Row(S.ENDING, ev.Released, S.ENDED, released)]
    for late in LATE:
        table += [Row(S.ENDING, late, S.ENDING, nothing), Row(S.ENDED, late, S.ENDED, nothing)]
    return table


OUTBOUND: tuple[Row, ...] = (
    Row(S.NEW, ev.Dialled, S.CALLING, dialled),
    Row(S.NEW, ev.PageHangup, S.ENDING, end(CallEnded(487, "Cancelled", "local"))),
    Row(S.NEW, ev.SetupFailed, S.ENDING, setup_failed),
    Row(
        S.NEW,
        ev.IceFailed,
        S.ENDING,
        end(CallEnded(408, "Browser media connection failed", "gateway")),
    ),
    Row(S.NEW, ev.Shutdown, S.ENDING, shutdown),
    Row(S.CALLING, ev.ProvisionalReceived, S.RINGING, first_provisional),
    Row(S.RINGING, ev.ProvisionalReceived, S.RINGING, nothing),
    Row(S.EARLY_MEDIA, ev.ProvisionalReceived, S.EARLY_MEDIA, nothing),
    *rows((S.CALLING, S.RINGING), ev.EarlyMediaReady, S.EARLY_MEDIA, early_media),
    *rows(SETUP_OUT, ev.AnsweredReceived, S.CONNECTED, answered),
    *rows(SETUP_OUT, ev.InviteFailed, S.ENDING, invite_failed),
    *rows(SETUP_OUT, ev.PageHangup, S.ENDING, cancel_invite(CallEnded(487, "Cancelled", "local"))),
    *rows(
        SETUP_OUT,
        ev.NoAnswerTimeout,
        S.ENDING,
        cancel_invite(CallEnded(408, "No answer", "remote")),
    ),
    *rows(
        SETUP_OUT,
        ev.IceFailed,
        S.ENDING,
        cancel_invite(CallEnded(408, "Browser media connection failed", "gateway")),
    ),
    *rows(SETUP_OUT, ev.SetupFailed, S.ENDING, setup_failed),
    *rows(SETUP_OUT, ev.Shutdown, S.ENDING, shutdown),
    # After our CANCEL: the INVITE's final response ends the call.
    Row(S.ENDING, ev.InviteFailed, S.ENDING, invite_failed),
    Row(S.ENDING, ev.AnsweredReceived, S.ENDING, answered_after_cancel),
    *connected_rows(),
    *closing_rows(),
)

CALLER_CANCELLED = end(CallEnded(487, "Cancelled by caller", "remote"))
NO_PAGE_LEFT = end(CallEnded(480, "No page left to answer", "gateway"), ev.SendResponse(480))
DECLINED = end(CallEnded(486, "Declined", "local"), ev.SendResponse(486))
RING_TIMEOUT = end(
    CallEnded(480, "No answer", "gateway"),
    ev.SendResponse(480, "Temporarily Unavailable (no answer)"),
)
NO_ACK = end(CallEnded(408, "The caller never confirmed the answer", "remote"))
ICE_FAILED = end(CallEnded(408, "Browser media connection failed", "gateway"), BYE)

INBOUND: tuple[Row, ...] = (
    Row(S.NEW, ev.PagesRung, S.RINGING, rung),
    *rows((S.NEW, S.RINGING, S.ANSWERING), ev.CancelReceived, S.ENDING, CALLER_CANCELLED),
    *rows((S.NEW, S.RINGING), ev.PagesGone, S.ENDING, NO_PAGE_LEFT),
    *rows((S.NEW, S.ANSWERING), ev.SetupFailed, S.ENDING, setup_failed),
    *rows((S.NEW, S.RINGING, S.ANSWERING), ev.Shutdown, S.ENDING, shutdown),
    Row(S.RINGING, ev.PageAccept, S.ANSWERING, accepted),
    Row(S.RINGING, ev.PageReject, S.ENDING, rejected),
    Row(S.RINGING, ev.PageHangup, S.ENDING, DECLINED),
    Row(S.RINGING, ev.RingTimeout, S.ENDING, RING_TIMEOUT),
    Row(S.ANSWERING, ev.AckReceived, S.CONNECTED, confirmed),
    Row(S.ANSWERING, ev.AckTimeout, S.ENDING, NO_ACK),
    Row(S.ANSWERING, ev.PageHangup, S.ENDING, end(CallEnded(200, "Hung up", "local"), BYE)),
    Row(S.ANSWERING, ev.IceFailed, S.ENDING, ICE_FAILED),
    *connected_rows(),
    *closing_rows(),
)

HUNG_UP_REMOTE = CallEnded(200, "Remote party hung up", "remote")

PEER: tuple[Row, ...] = (
    Row(S.NEW, ev.PagesRung, S.RINGING, rung),
    Row(S.NEW, ev.SetupFailed, S.ENDING, setup_failed),
    Row(S.NEW, ev.Shutdown, S.ENDING, shutdown),
    Row(S.RINGING, ev.PageAccept, S.CONNECTED, accepted),
    Row(S.RINGING, ev.PageReject, S.ENDING, rejected),
    Row(S.RINGING, ev.PageHangup, S.ENDING, end(CallEnded(487, "Cancelled by caller", "remote"))),
    Row(S.RINGING, ev.CalleeHangup, S.ENDING, end(CallEnded(486, "Declined", "remote"))),
    Row(S.RINGING, ev.RingTimeout, S.ENDING, end(CallEnded(480, "No answer", "remote"))),
    Row(S.RINGING, ev.PagesGone, S.ENDING, callee_gone),
    Row(S.RINGING, ev.Shutdown, S.ENDING, shutdown),
    Row(S.CONNECTED, ev.PageHangup, S.ENDING, end(HUNG_UP_REMOTE)),
    Row(S.CONNECTED, ev.CalleeHangup, S.ENDING, end(HUNG_UP_REMOTE)),
    Row(S.CONNECTED, ev.Shutdown, S.ENDING, shutdown),
    *closing_rows(),
)

TABLES: dict[CallKind, tuple[Row, ...]] = {
    CallKind.OUTBOUND: OUTBOUND,
    CallKind.INBOUND: INBOUND,
    CallKind.PEER: PEER,
}


def index(table: Iterable[Row]) -> dict[tuple[CallState, type[Event]], Row]:
    out: dict[tuple[CallState, type[Event]], Row] = {}
    for row in table:
        key = (row.source, row.event)
        if key in out:
            raise ValueError(f"two rows for {row.source} + {row.event.__name__}")
        out[key] = row
    return out


_INDEX = {kind: index(table) for kind, table in TABLES.items()}
_MOVES = {kind: {(row.source, row.target) for row in table} for kind, table in TABLES.items()}


class CallCore:
    """One call's state, moved only by `handle` and only along its table."""

    def __init__(self, kind: CallKind, call_id: str, timeouts: Timeouts | None = None) -> None:
        self.kind = kind
        self.id = call_id
        self.timeouts = timeouts or Timeouts()
        self.state = CallState.NEW
        self.history: list[CallState] = [CallState.NEW]
        self.ended: CallEnded | None = None
        # Outbound: why we sent CANCEL, which the INVITE's final response then reports.
        self.cancelled: CallEnded | None = None

    def can_handle(self, event: Event) -> bool:
        return (self.state, type(event)) in _INDEX[self.kind]

    def handle(self, event: Event) -> list[Effect]:
        row = _INDEX[self.kind].get((self.state, type(event)))
        if row is None:
            error = IllegalTransition(self.kind, self.state, event)
            log.error("[call %s] %s", self.id[:12], error)
            raise error
        effects = row.action(self, event)
        if row.target is not self.state:
            log.debug(
                "[call %s] %s -> %s on %s",
                self.id[:12],
                self.state,
                row.target,
                type(event).__name__,
            )
            self.state = row.target
            self.history.append(row.target)
        return effects

    def move(self, target: CallState, because: str = "") -> None:
        """A state change made by a driver step not yet expressed as an event: allowed
        only where some row of the table makes the same change."""
        if target is self.state:
            return
        if (self.state, target) not in _MOVES[self.kind]:
            error = IllegalTransition(self.kind, self.state, Event(), target)
            log.error("[call %s] %s", self.id[:12], error)
            raise error
        log.debug("[call %s] %s -> %s %s", self.id[:12], self.state, target, because)
        self.state = target
        self.history.append(target)

    def ending(self, ended: CallEnded) -> list[Effect]:
        """What every end does once the far end has been told (CANCEL, BYE or response)."""
        self.ended = ended
        return [
            ev.CancelAllTimers(),
            ev.CloseMedia(),
            ev.TellPage(Hangup(self.id, ended.code, ended.reason, ended.by)),
            ev.Release(ended),
        ]


def transitions(kind: CallKind) -> list[tuple[CallState, str, CallState]]:
    """The state changes of a kind of call, for the diagram in docs/architecture.md."""
    seen: dict[tuple[CallState, str, CallState], None] = {}
    for row in TABLES[kind]:
        if row.source is not row.target:
            seen[(row.source, row.event.__name__, row.target)] = None
    return list(seen)


class CoreDriven:
    """A call driver's view of its core: the state and its history, read-only."""

    _core: CallCore

    @property
    def state(self) -> CallState:
        return self._core.state

    @property
    def history(self) -> list[CallState]:
        return self._core.history
