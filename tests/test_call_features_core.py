"""Hold, blind transfer and the session timer as sub-machines: every row of each table,
and what each refuses. Pure: no network, no clock."""

from __future__ import annotations

import itertools

import pytest

from gateway.calls import events as ev
from gateway.calls.events import Event
from gateway.calls.features import (
    FeatureRow,
    Hold,
    HoldRequested,
    HoldState,
    IllegalFeatureTransition,
    ReferAccepted,
    ReferFailed,
    RefreshReceived,
    ReinviteAccepted,
    ReinviteRefused,
    ResumeRequested,
    SessionNegotiated,
    SessionRefreshDue,
    SessionTimer,
    SipfragReceived,
    TimerState,
    Transfer,
    TransferAbandoned,
    TransferRequested,
    TransferState,
    TransferTimeout,
    expiry_delay,
)
from gateway.calls.page import Held, TransferProgress
from gateway.sip.headers import Refresher, SessionExpires

SAMPLES: dict[type[Event], Event] = {
    ReinviteRefused: ReinviteRefused(488),
    TransferRequested: TransferRequested("sip:200@pbx"),
    ReferAccepted: ReferAccepted(180.0),
    ReferFailed: ReferFailed(403, "Forbidden"),
    SipfragReceived: SipfragReceived(180, "Ringing"),
}


def sample(event: type[Event]) -> Event:
    return SAMPLES.get(event) or event()


@pytest.mark.parametrize("row", Hold.TABLE, ids=lambda r: f"{r.source}+{r.event.__name__}")
def test_every_hold_row(row: FeatureRow[HoldState]) -> None:
    hold = Hold("c1")
    hold.state = row.source
    effects = hold.handle(sample(row.event))
    assert hold.state is row.target
    if row.event is HoldRequested:
        assert effects == [ev.SendReinvite("sendonly")]
    elif row.event is ResumeRequested:
        assert effects == [ev.SendReinvite("sendrecv")]
    elif row.event is ReinviteAccepted:
        assert effects == [ev.TellPage(Held("c1", row.target is HoldState.HELD, "local"))]
    else:
        assert effects == []  # refused: back where it was, the driver tells the page


def test_hold_refuses_what_its_table_lacks() -> None:
    events = [HoldRequested, ResumeRequested, ReinviteAccepted, ReinviteRefused]
    allowed = {(row.source, row.event) for row in Hold.TABLE}
    refused = [(s, e) for s, e in itertools.product(HoldState, events) if (s, e) not in allowed]
    assert (HoldState.HELD, HoldRequested) in refused
    for state, event in refused:
        hold = Hold("c1")
        hold.state = state
        with pytest.raises(IllegalFeatureTransition):
            hold.handle(sample(event))
        assert hold.state is state


def test_held_follows_the_far_ends_answers() -> None:
    hold = Hold("c1")
    hold.handle(HoldRequested())
    assert not hold.held and hold.pending  # media held only once the far end took it
    hold.handle(ReinviteAccepted())
    assert hold.held and not hold.pending
    hold.handle(ResumeRequested())
    assert hold.held
    hold.handle(ReinviteRefused(491))
    assert hold.state is HoldState.HELD


@pytest.mark.parametrize("row", Transfer.TABLE, ids=lambda r: f"{r.source}+{r.event.__name__}")
def test_every_transfer_row(row: FeatureRow[TransferState]) -> None:
    transfer = Transfer("c2")
    transfer.state = row.source
    effects = transfer.handle(sample(row.event))
    assert transfer.state is row.target
    messages = [e.message for e in effects if isinstance(e, ev.TellPage)]
    expected = {
        TransferRequested: [TransferProgress("c2", "trying")],
        ReferAccepted: [TransferProgress("c2", "accepted")],
        ReferFailed: [TransferProgress("c2", "failed", 403, "Forbidden")],
        TransferTimeout: [TransferProgress("c2", "failed", 408, "No transfer result")],
        TransferAbandoned: [],
    }[row.event]
    assert messages == expected
    if row.event is TransferRequested:
        assert ev.SendRefer("sip:200@pbx") in effects
    if row.event is ReferAccepted:
        assert ev.StartTimer("transfer", 180.0) in effects


@pytest.mark.parametrize("start", [TransferState.REFERRING, TransferState.ACCEPTED])
@pytest.mark.parametrize(
    ("code", "state", "page"),
    [
        (100, None, "trying"),
        (180, None, "ringing"),
        (183, None, "ringing"),
        (200, TransferState.DONE, "done"),
        (486, TransferState.IDLE, "failed"),
    ],
)
def test_sipfrag_rows(
    start: TransferState, code: int, state: TransferState | None, page: str
) -> None:
    transfer = Transfer("c2")
    transfer.state = start  # a NOTIFY may overtake the 202 (RFC 3515 section 2.4.4)
    effects = transfer.handle(SipfragReceived(code, "x"))
    assert transfer.state is (state or start)
    assert ev.TellPage(TransferProgress("c2", page, code, "x")) in effects
    if code >= 200:
        assert ev.CancelTimer("transfer") in effects


def test_transfer_refuses_what_its_table_lacks() -> None:
    events = [TransferRequested, ReferAccepted, ReferFailed, TransferTimeout, TransferAbandoned]
    allowed = {(row.source, row.event) for row in Transfer.TABLE}
    refused = [(s, e) for s, e in itertools.product(TransferState, events) if (s, e) not in allowed]
    refused += [(TransferState.IDLE, SipfragReceived), (TransferState.DONE, SipfragReceived)]
    assert (TransferState.REFERRING, TransferRequested) in refused  # one transfer at a time
    for state, event in refused:
        transfer = Transfer("c2")
        transfer.state = state
        with pytest.raises(IllegalFeatureTransition):
            transfer.handle(sample(event))
        assert transfer.state is state


def negotiated(seconds: int, refresher: Refresher | None, *, uac: bool) -> SessionNegotiated:
    return SessionNegotiated(SessionExpires(seconds, refresher), uac, 90)


@pytest.mark.parametrize("start", [TimerState.OFF, TimerState.REFRESHING, TimerState.WATCHING])
@pytest.mark.parametrize(
    ("refresher", "uac", "state"),
    [
        (Refresher.UAC, True, TimerState.REFRESHING),
        (Refresher.UAS, True, TimerState.WATCHING),
        (Refresher.UAC, False, TimerState.WATCHING),
        (Refresher.UAS, False, TimerState.REFRESHING),
        # Unsaid: whoever decides picks itself (RFC 4028 section 7.4: in an INVITE the UAS
        # chooses; a 2xx must say, and if it does not we refresh rather than lose the call).
        (None, True, TimerState.REFRESHING),
        (None, False, TimerState.REFRESHING),
    ],
)
def test_session_negotiated_rows(
    start: TimerState, refresher: Refresher | None, uac: bool, state: TimerState
) -> None:
    timer = SessionTimer("c3")
    timer.state = start
    effects = timer.handle(negotiated(1800, refresher, uac=uac))
    assert timer.state is state and timer.interval == 1800
    if state is TimerState.REFRESHING:
        assert ev.StartTimer("session-refresh", 900) in effects
    else:
        assert ev.StartTimer("session-expiry", 1768) in effects
        assert ev.CancelTimer("session-refresh") in effects


def test_session_interval_is_never_under_min_se() -> None:
    timer = SessionTimer("c3")
    timer.handle(negotiated(30, Refresher.UAC, uac=True))
    assert timer.interval == 90
    assert timer.header(we_are_uac=True) == SessionExpires(90, Refresher.UAC)
    assert timer.header(we_are_uac=False) == SessionExpires(90, Refresher.UAS)


def test_session_refresh_rows() -> None:
    timer = SessionTimer("c3")
    assert timer.handle(RefreshReceived()) == []  # OFF: nothing to watch
    timer.handle(negotiated(120, Refresher.UAC, uac=True))
    assert timer.handle(SessionRefreshDue()) == [ev.SendReinvite(None)]
    assert timer.handle(RefreshReceived()) == []  # we refresh: theirs changes nothing
    timer.handle(negotiated(120, Refresher.UAC, uac=False))
    assert timer.handle(RefreshReceived()) == [ev.StartTimer("session-expiry", expiry_delay(120))]
    assert expiry_delay(120) == 88  # 120 - min(32, 120 / 3)


@pytest.mark.parametrize("state", [TimerState.OFF, TimerState.WATCHING])
def test_session_refresh_due_only_when_we_refresh(state: TimerState) -> None:
    timer = SessionTimer("c3")
    timer.state, timer.interval = state, 120
    with pytest.raises(IllegalFeatureTransition):
        timer.handle(SessionRefreshDue())
    assert timer.state is state
