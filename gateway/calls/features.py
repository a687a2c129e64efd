"""In-call features as sub-machines of a connected call: hold, blind transfer and the
session timer (RFC 4028). Each is a small enum with its own table; like the call core,
`handle(event) -> effects`, no I/O, and an impossible event raises `IllegalTransition`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, TypeVar

from gateway.calls import events as ev
from gateway.calls.events import Effect, Event
from gateway.calls.page import Held, TransferProgress
from gateway.sip.headers import (
    HasHeaders,
    HeaderError,
    Refresher,
    SessionExpires,
    session_expires,
)
from sdp import Direction

log = logging.getLogger(__name__)

StateT = TypeVar("StateT", bound=StrEnum)


class IllegalFeatureTransition(RuntimeError):
    def __init__(self, machine: str, state: StrEnum, event: Event) -> None:
        super().__init__(f"{machine}: {type(event).__name__} is impossible in {state}")
        self.state, self.event = state, event


@dataclass(frozen=True)
class FeatureRow(Generic[StateT]):
    source: StateT
    event: type[Event]
    target: StateT
    # Effects, given the feature machine's call id and the event.
    action: Callable[[str, Event], list[Effect]]


class SubMachine(Generic[StateT]):
    name = "feature"
    TABLE: tuple[FeatureRow[StateT], ...] = ()

    def __init__(self, call_id: str, initial: StateT) -> None:
        self.call_id = call_id
        self.state = initial
        self._index = {(row.source, row.event): row for row in self.TABLE}

    def handle(self, event: Event) -> list[Effect]:
        row = self._index.get((self.state, type(event)))
        if row is None:
            error = IllegalFeatureTransition(self.name, self.state, event)
            log.error("[call %s] %s", self.call_id[:12], error)
            raise error
        self.state = row.target
        return row.action(self.call_id, event)


def none(call_id: str, event: Event) -> list[Effect]:
    return []


# --- hold (RFC 3264 section 8.4) --------------------------------------------------------


class HoldState(StrEnum):
    ACTIVE = "active"
    HOLDING = "holding"  # our sendonly re-INVITE is out
    HELD = "held"
    RESUMING = "resuming"  # our sendrecv re-INVITE is out


@dataclass(frozen=True)
class HoldRequested(Event):
    pass


@dataclass(frozen=True)
class ResumeRequested(Event):
    pass


@dataclass(frozen=True)
class ReinviteAccepted(Event):
    pass


@dataclass(frozen=True)
class ReinviteRefused(Event):
    code: int


def _reinvite(direction: Direction) -> Callable[[str, Event], list[Effect]]:
    return lambda call_id, event: [ev.SendReinvite(direction)]


def _held(on: bool) -> Callable[[str, Event], list[Effect]]:
    return lambda call_id, event: [ev.TellPage(Held(call_id, on, "local"))]


class Hold(SubMachine[HoldState]):
    name = "hold"
    TABLE = (
        FeatureRow(HoldState.ACTIVE, HoldRequested, HoldState.HOLDING, _reinvite("sendonly")),
        FeatureRow(HoldState.HOLDING, ReinviteAccepted, HoldState.HELD, _held(True)),
        FeatureRow(HoldState.HOLDING, ReinviteRefused, HoldState.ACTIVE, none),
        FeatureRow(HoldState.HELD, ResumeRequested, HoldState.RESUMING, _reinvite("sendrecv")),
        FeatureRow(HoldState.RESUMING, ReinviteAccepted, HoldState.ACTIVE, _held(False)),
        FeatureRow(HoldState.RESUMING, ReinviteRefused, HoldState.HELD, none),
    )

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, HoldState.ACTIVE)

    @property
    def held(self) -> bool:
        """Held once the far end took the hold, until it took the resume."""
        return self.state in (HoldState.HELD, HoldState.RESUMING)

    @property
    def pending(self) -> bool:
        return self.state in (HoldState.HOLDING, HoldState.RESUMING)


# --- blind transfer (RFC 3515) ----------------------------------------------------------


class TransferState(StrEnum):
    IDLE = "idle"
    REFERRING = "referring"  # our REFER is out
    ACCEPTED = "accepted"  # 202: the outcome comes in NOTIFYs
    DONE = "done"


@dataclass(frozen=True)
class TransferRequested(Event):
    target: str


@dataclass(frozen=True)
class ReferAccepted(Event):
    wait: float  # how long the NOTIFYs may take


@dataclass(frozen=True)
class ReferFailed(Event):
    code: int
    reason: str


@dataclass(frozen=True)
class SipfragReceived(Event):
    code: int
    reason: str


@dataclass(frozen=True)
class TransferTimeout(Event):
    pass


@dataclass(frozen=True)
class TransferAbandoned(Event):
    """The page hung up while the REFER was out."""


def _tell(state: str) -> Callable[[str, Event], list[Effect]]:
    return lambda call_id, event: [ev.TellPage(TransferProgress(call_id, state))]


def _refer(call_id: str, event: Event) -> list[Effect]:
    assert isinstance(event, TransferRequested)
    return [ev.TellPage(TransferProgress(call_id, "trying")), ev.SendRefer(event.target)]


def _accepted(call_id: str, event: Event) -> list[Effect]:
    assert isinstance(event, ReferAccepted)
    return [
        ev.TellPage(TransferProgress(call_id, "accepted")),
        ev.StartTimer("transfer", event.wait),
    ]


def _failed(call_id: str, event: Event) -> list[Effect]:
    code, reason = 408, "No transfer result"
    if isinstance(event, ReferFailed | SipfragReceived):
        code, reason = event.code, event.reason
    return [
        ev.CancelTimer("transfer"),
        ev.TellPage(TransferProgress(call_id, "failed", code, reason)),
    ]


def _progress(call_id: str, event: Event) -> list[Effect]:
    assert isinstance(event, SipfragReceived)
    state = "ringing" if event.code in (180, 183) else "trying"
    return [ev.TellPage(TransferProgress(call_id, state, event.code, event.reason))]


def _done(call_id: str, event: Event) -> list[Effect]:
    assert isinstance(event, SipfragReceived)
    message = TransferProgress(call_id, "done", event.code, event.reason)
    return [ev.CancelTimer("transfer"), ev.TellPage(message)]


class Transfer(SubMachine[TransferState]):
    """A NOTIFY's sipfrag is sorted by the driver: `Sipfrag1xx`, `2xx` or failure."""

    name = "transfer"
    TABLE = (
        FeatureRow(TransferState.IDLE, TransferRequested, TransferState.REFERRING, _refer),
        FeatureRow(TransferState.REFERRING, ReferAccepted, TransferState.ACCEPTED, _accepted),
        FeatureRow(TransferState.REFERRING, ReferFailed, TransferState.IDLE, _failed),
        FeatureRow(TransferState.REFERRING, TransferAbandoned, TransferState.IDLE, none),
        FeatureRow(TransferState.ACCEPTED, TransferTimeout, TransferState.IDLE, _failed),
    )

    def __init__(self, call_id: str) -> None:
        super().__init__(call_id, TransferState.IDLE)

    def handle(self, event: Event) -> list[Effect]:
        if isinstance(event, SipfragReceived) and self.busy:
            # One event, three rows by status class (RFC 3515 section 2.4.5); a NOTIFY
            # may overtake the 202 to our REFER (RFC 3515 section 2.4.4).
            if event.code < 200:
                return _progress(self.call_id, event)
            self.state = TransferState.DONE if event.code < 300 else TransferState.IDLE
            return (_done if event.code < 300 else _failed)(self.call_id, event)
        return super().handle(event)

    @property
    def busy(self) -> bool:
        return self.state in (TransferState.REFERRING, TransferState.ACCEPTED)


# --- session timer (RFC 4028) -----------------------------------------------------------


class TimerState(StrEnum):
    OFF = "off"
    REFRESHING = "refreshing"  # we send the refreshes
    WATCHING = "watching"  # the far end refreshes; we watch for them


@dataclass(frozen=True)
class SessionNegotiated(Event):
    """A 2xx, INVITE or UPDATE carried Session-Expires; `we_are_uac` in that transaction."""

    value: SessionExpires
    we_are_uac: bool
    minimum: int


@dataclass(frozen=True)
class RefreshReceived(Event):
    pass


@dataclass(frozen=True)
class SessionRefreshDue(Event):
    pass


def expiry_delay(interval: int) -> float:
    """RFC 4028 section 10: give up a little before the interval, at most 32 s."""
    return interval - min(32, interval / 3)


class SessionTimer:
    """Its table is by hand: the target of `SessionNegotiated` depends on the refresher."""

    ROWS: tuple[tuple[TimerState, type[Event], tuple[TimerState, ...]], ...] = (
        (TimerState.OFF, SessionNegotiated, (TimerState.REFRESHING, TimerState.WATCHING)),
        (TimerState.REFRESHING, SessionNegotiated, (TimerState.REFRESHING, TimerState.WATCHING)),
        (TimerState.WATCHING, SessionNegotiated, (TimerState.REFRESHING, TimerState.WATCHING)),
        (TimerState.OFF, RefreshReceived, (TimerState.OFF,)),
        (TimerState.REFRESHING, RefreshReceived, (TimerState.REFRESHING,)),
        (TimerState.WATCHING, RefreshReceived, (TimerState.WATCHING,)),
        (TimerState.REFRESHING, SessionRefreshDue, (TimerState.REFRESHING,)),
    )

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.state = TimerState.OFF
        self.interval: int | None = None
        self._allowed = {(row[0], row[1]): row[2] for row in self.ROWS}

    @property
    def we_refresh(self) -> bool:
        return self.state is TimerState.REFRESHING

    def handle(self, event: Event) -> list[Effect]:
        if (self.state, type(event)) not in self._allowed:
            error = IllegalFeatureTransition("session timer", self.state, event)
            log.error("[call %s] %s", self.call_id[:12], error)
            raise error
        if isinstance(event, SessionNegotiated):
            return self._negotiated(event)
        if isinstance(event, SessionRefreshDue):
            # The 2xx to the refresh negotiates the next interval (SessionNegotiated).
            return [ev.SendReinvite(None)]
        if self.state is TimerState.WATCHING:  # a refresh: watch afresh
            return [ev.StartTimer("session-expiry", expiry_delay(self._interval))]
        return []

    @property
    def _interval(self) -> int:
        assert self.interval is not None
        return self.interval

    def _negotiated(self, event: SessionNegotiated) -> list[Effect]:
        self.interval = max(event.value.seconds, event.minimum)
        refresher = event.value.refresher or (Refresher.UAC if event.we_are_uac else Refresher.UAS)
        if (refresher is Refresher.UAC) == event.we_are_uac:
            self.state = TimerState.REFRESHING
            return [
                ev.StartTimer("session-refresh", self.interval / 2),
                ev.CancelTimer("session-expiry"),
            ]
        self.state = TimerState.WATCHING
        return [
            ev.CancelTimer("session-refresh"),
            ev.StartTimer("session-expiry", expiry_delay(self.interval)),
        ]

    def negotiate(self, message: HasHeaders, *, we_are_uac: bool, minimum: int) -> list[Effect]:
        """The Session-Expires of a 2xx, INVITE or UPDATE, if it has a usable one."""
        try:
            value = session_expires(message)
        except HeaderError:
            return []
        if value is None:
            return []
        return self.handle(SessionNegotiated(value, we_are_uac, minimum))

    def request_headers(self) -> tuple[tuple[str, str], ...]:
        """What our re-INVITEs carry (we are their UAC)."""
        expires = self.header(we_are_uac=True)
        extra = (("Session-Expires", str(expires)),) if expires is not None else ()
        return (("Supported", "timer"), *extra)

    def header(self, *, we_are_uac: bool) -> SessionExpires | None:
        """Our Session-Expires in a request (uac) or a 2xx (uas), None if off."""
        if self.interval is None:
            return None
        we = Refresher.UAC if we_are_uac else Refresher.UAS
        they = Refresher.UAS if we_are_uac else Refresher.UAC
        return SessionExpires(self.interval, we if self.we_refresh else they)


def too_brief(request: HasHeaders, minimum: int) -> bool:
    """RFC 4028 section 8.1: an interval under our Min-SE is refused with 422."""
    try:
        value = session_expires(request)
    except HeaderError:
        return False
    return value is not None and value.seconds < minimum
