"""The call core on its own: every row of every transition table, and every impossible
event refused. No network, no clock, no asyncio: the core is a pure function of its
state and the event."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from gateway.calls import diagram
from gateway.calls import events as ev
from gateway.calls.events import CallEnded, Event
from gateway.calls.machine import (
    LATE,
    TABLES,
    CallCore,
    CallKind,
    CallState,
    IllegalTransition,
    Row,
    Timeouts,
    transitions,
)
from gateway.calls.page import (
    Answer,
    CallFailed,
    Candidate,
    Dtmf,
    Hangup,
    Held,
    Incoming,
    PageMessage,
    Progress,
    Ringing,
    TransferProgress,
    Transferred,
)

SAMPLES: dict[type[Event], Event] = {
    ev.ProvisionalReceived: ev.ProvisionalReceived(180),
    ev.EarlyMediaReady: ev.EarlyMediaReady("v=0 early"),
    ev.AnsweredReceived: ev.AnsweredReceived("v=0 answer"),
    ev.InviteFailed: ev.InviteFailed(486, "Busy Here"),
    ev.PageAccept: ev.PageAccept("v=0 page"),
    ev.PageReject: ev.PageReject(603),
    ev.PagesGone: ev.PagesGone("bob"),
    ev.SetupFailed: ev.SetupFailed(CallEnded(503, "No media port available", "gateway")),
    ev.SessionRefreshFailed: ev.SessionRefreshFailed(481),
    ev.Shutdown: ev.Shutdown("Gateway shutting down"),
}
ALL_EVENTS = sorted(
    {row.event for table in TABLES.values() for row in table}, key=lambda e: e.__name__
)


def sample(event: type[Event]) -> Event:
    return SAMPLES.get(event) or event()


def core_in(kind: CallKind, state: CallState) -> CallCore:
    core = CallCore(kind, "c0ffee", Timeouts(no_answer=90, ring=30))
    core.state = state  # a row is about one state; how the call got there is other rows'
    return core


def row_id(kind: CallKind, row: Row) -> str:
    return f"{kind.name}:{row.source.name}+{row.event.__name__}->{row.target.name}"


ROWS = [(kind, row) for kind, table in TABLES.items() for row in table]


@pytest.mark.parametrize(("kind", "row"), ROWS, ids=[row_id(k, r) for k, r in ROWS])
def test_every_row(kind: CallKind, row: Row) -> None:
    core = core_in(kind, row.source)
    effects = core.handle(sample(row.event))
    assert core.state is row.target
    if row.target is not row.source:
        assert core.history[-1] is row.target
    ends = [e for e in effects if isinstance(e, ev.Release)]
    if row.source is not CallState.ENDING and row.target is CallState.ENDING:
        if kind is CallKind.OUTBOUND and any(isinstance(e, ev.SendCancel) for e in effects):
            # CANCEL first; the INVITE's final response ends the call (ENDING+InviteFailed),
            # except at shutdown, which does not wait for it.
            assert bool(ends) == (row.event is ev.Shutdown)
        else:
            # Every end: timers stopped, media closed, the page told, the call released.
            assert len(ends) == 1 and core.ended == ends[0].ended
            hangups = [e.message for e in effects if isinstance(e, ev.TellPage)]
            assert Hangup("c0ffee", core.ended.code, core.ended.reason, core.ended.by) in hangups
            assert any(isinstance(e, ev.CancelAllTimers) for e in effects)
            assert any(isinstance(e, ev.CloseMedia) for e in effects)
    if row.event in LATE and row.source in (CallState.ENDING, CallState.ENDED):
        assert effects == []  # a late event after the end changes nothing


def test_every_table_has_one_row_per_state_and_event() -> None:
    for table in TABLES.values():
        keys = [(row.source, row.event) for row in table]
        assert len(keys) == len(set(keys))


IMPOSSIBLE = [
    (kind, state, event)
    for kind, table in TABLES.items()
    for state, event in itertools.product(CallState, ALL_EVENTS)
    if (state, event) not in {(row.source, row.event) for row in table}
]


@pytest.mark.parametrize(
    ("kind", "state", "event"),
    IMPOSSIBLE,
    ids=[f"{k.name}:{s.name}+{e.__name__}" for k, s, e in IMPOSSIBLE],
)
def test_impossible_transitions_are_refused(
    kind: CallKind, state: CallState, event: type[Event], caplog: pytest.LogCaptureFixture
) -> None:
    core = core_in(kind, state)
    with pytest.raises(IllegalTransition):
        core.handle(sample(event))
    assert core.state is state
    assert "impossible" in caplog.text


def test_impossible_list_is_not_empty() -> None:
    # e.g. a 200 to an INVITE on an incoming call, or hanging up an ended call twice over.
    assert (CallKind.INBOUND, CallState.RINGING, ev.AnsweredReceived) in IMPOSSIBLE
    assert (CallKind.PEER, CallState.CONNECTED, ev.ByeReceived) in IMPOSSIBLE
    assert (CallKind.OUTBOUND, CallState.ENDED, ev.Released) in IMPOSSIBLE


def test_move_outside_the_table_is_refused() -> None:
    core = core_in(CallKind.PEER, CallState.RINGING)
    with pytest.raises(IllegalTransition):
        core.move(CallState.ENDED)  # PeerCall skipped ENDING before the table
    core.move(CallState.ENDING)
    core.move(CallState.ENDED)
    assert core.history[-2:] == [CallState.ENDING, CallState.ENDED]


def run(core: CallCore, *events: Event) -> list[ev.Effect]:
    effects: list[ev.Effect] = []
    for event in events:
        effects += core.handle(event)
    return effects


def told(effects: list[ev.Effect]) -> list[object]:
    return [e.message for e in effects if isinstance(e, ev.TellPage)]


def test_outbound_call_answered_and_hung_up() -> None:
    core = CallCore(CallKind.OUTBOUND, "c1", Timeouts(no_answer=90))
    effects = run(
        core,
        ev.Dialled(),
        ev.ProvisionalReceived(180),
        ev.EarlyMediaReady("v=0 early"),
        ev.ProvisionalReceived(183),
        ev.AnsweredReceived("v=0 answer"),
    )
    assert ev.StartTimer("no-answer", 90) in effects and ev.CancelTimer("no-answer") in effects
    assert told(effects) == [
        Ringing("c1", 180),
        Progress("c1", "v=0 early"),
        Answer("c1", "v=0 answer"),
    ]
    effects = run(core, ev.PageHangup())
    assert effects[0] == ev.SendBye()
    assert Hangup("c1", 200, "Hung up", "local") in told(effects)
    run(core, ev.Released())
    assert core.history == [
        CallState.NEW,
        CallState.CALLING,
        CallState.RINGING,
        CallState.EARLY_MEDIA,
        CallState.CONNECTED,
        CallState.ENDING,
        CallState.ENDED,
    ]


def test_outbound_no_answer_cancels_then_ends_with_408() -> None:
    core = CallCore(CallKind.OUTBOUND, "c2")
    effects = run(core, ev.Dialled(), ev.ProvisionalReceived(180), ev.NoAnswerTimeout())
    assert ev.SendCancel() in effects and core.state is CallState.ENDING and core.ended is None
    effects = run(core, ev.InviteFailed(487, "Request Terminated"))
    assert core.ended == CallEnded(408, "No answer", "remote")
    assert Hangup("c2", 408, "No answer", "remote") in told(effects)


def test_outbound_200_crossing_cancel_is_confirmed_and_byed() -> None:
    core = CallCore(CallKind.OUTBOUND, "c3")
    run(core, ev.Dialled(), ev.PageHangup())
    effects = run(core, ev.AnsweredReceived("v=0"))
    assert effects[0] == ev.SendBye()
    assert core.ended == CallEnded(487, "Cancelled", "local")


def test_inbound_call_rings_is_accepted_and_confirmed() -> None:
    core = CallCore(CallKind.INBOUND, "c4", Timeouts(ring=30))
    effects = run(core, ev.PagesRung(), ev.PageAccept("v=0 page"), ev.AckReceived())
    assert effects[:2] == [ev.SendRinging(180), ev.StartTimer("ring", 30)]
    assert ev.StopRingingOthers() in effects and ev.SendAnswer("v=0 page") in effects
    assert told(effects) == [Answer("c4")]
    assert core.state is CallState.CONNECTED


def test_inbound_ring_timeout_answers_480() -> None:
    core = CallCore(CallKind.INBOUND, "c5")
    effects = run(core, ev.PagesRung(), ev.RingTimeout())
    assert effects[2] == ev.SendResponse(480, "Temporarily Unavailable (no answer)")
    assert core.ended == CallEnded(480, "No answer", "gateway")


def test_peer_call_goes_through_ending() -> None:
    core = CallCore(CallKind.PEER, "c6")
    run(core, ev.PagesRung(), ev.PageAccept("v=0"), ev.CalleeHangup(), ev.Released())
    assert core.history[-3:] == [CallState.CONNECTED, CallState.ENDING, CallState.ENDED]


def test_architecture_doc_shows_the_tables() -> None:
    """docs/architecture.md's call state diagrams are the tables' (regenerate on change)."""
    doc = (Path(__file__).parent.parent / "docs" / "architecture.md").read_text()
    start, end = doc.index(diagram.BEGIN), doc.index(diagram.END) + len(diagram.END)
    assert doc[start:end] == diagram.render()
    for kind in CallKind:
        for source, event, target in transitions(kind):
            assert f"{source.value.replace('-', '_')} --> {target.value.replace('-', '_')}" in doc
            assert event in doc


CALLS = Path(__file__).parent.parent / "gateway" / "calls"


@pytest.mark.parametrize("module", sorted(CALLS.glob("*.py")), ids=lambda p: p.name)
def test_call_modules_stay_small_and_simple(module: Path) -> None:
    radon = pytest.importorskip("radon.complexity")
    source = module.read_text()
    assert source.count("\n") <= 520, "split the module: one layer, about 500 lines at most"
    for block in radon.cc_visit(source):
        assert block.complexity < 15, f"{block.name}: cyclomatic complexity {block.complexity}"


@pytest.mark.parametrize(
    ("message", "json"),
    [
        (
            Incoming("c", "+331", "v=0", "Ann"),
            {"type": "incoming", "id": "c", "from": "+331", "sdp": "v=0", "fromName": "Ann"},
        ),
        (Incoming("c", "100", "v=0"), {"type": "incoming", "id": "c", "from": "100", "sdp": "v=0"}),
        (Ringing("c", 183), {"type": "ringing", "id": "c", "code": 183}),
        (Progress("c", "v=0"), {"type": "progress", "id": "c", "sdp": "v=0"}),
        (Answer("c", "v=0"), {"type": "answer", "id": "c", "sdp": "v=0"}),
        (Answer("c"), {"type": "answer", "id": "c"}),
        (
            Hangup("c", 486, "Busy Here", "remote"),
            {"type": "hangup", "id": "c", "code": 486, "reason": "Busy Here", "by": "remote"},
        ),
        (Held("c", True, "local"), {"type": "held", "id": "c", "held": True, "by": "local"}),
        (TransferProgress("c", "trying"), {"type": "transfer", "id": "c", "state": "trying"}),
        (
            TransferProgress("c", "failed", 403, "Forbidden"),
            {"type": "transfer", "id": "c", "state": "failed", "code": 403, "reason": "Forbidden"},
        ),
        (Transferred("c", "sip:200@pbx"), {"type": "transferred", "id": "c", "to": "sip:200@pbx"}),
        (Dtmf("c", "5"), {"type": "dtmf", "id": "c", "digit": "5"}),
        (
            CallFailed("c", "bad-sdp", "no audio"),
            {"type": "error", "id": "c", "code": "bad-sdp", "message": "no audio"},
        ),
        (Candidate("c", None), {"type": "candidate", "id": "c", "candidate": None}),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, dict) else "",
)
def test_page_messages_are_the_protocols_json(
    message: PageMessage, json: dict[str, object]
) -> None:
    """docs/protocol.md's messages, key for key and in the same order as before."""
    assert message.to_json() == json
    assert list(message.to_json()) == list(json)
