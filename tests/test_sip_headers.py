"""gateway.sip.headers: typed header values instead of substrings."""

from __future__ import annotations

import pytest
from sipmessage import Request

from gateway.sip import headers
from gateway.sip.headers import (
    Event,
    HeaderError,
    MinSE,
    ReferTo,
    Refresher,
    Replaces,
    SessionExpires,
    SubscriptionState,
    SubscriptionStateValue,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1800", SessionExpires(1800)),
        ("1800;refresher=uac", SessionExpires(1800, Refresher.UAC)),
        (" 90 ; REFRESHER = UAS ", SessionExpires(90, Refresher.UAS)),
        ("4000;refresher=uas;x-vendor=1", SessionExpires(4000, Refresher.UAS)),
    ],
)
def test_session_expires(text: str, expected: SessionExpires) -> None:
    assert SessionExpires.parse(text) == expected
    assert SessionExpires.parse(str(expected)) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1800;refresher=both", "1e3", "1800;;"])
def test_bad_session_expires(text: str) -> None:
    with pytest.raises(HeaderError):
        SessionExpires.parse(text)


def test_min_se() -> None:
    assert MinSE.parse("120") == MinSE(120)
    assert str(MinSE(90)) == "90"
    with pytest.raises(HeaderError):
        MinSE.parse("ninety")


def test_refer_to_plain_and_with_replaces() -> None:
    plain = ReferTo.parse("<sip:bob@example.com>")
    assert plain.address.uri.user == "bob"
    assert plain.replaces is None
    attended = ReferTo.parse(
        "<sip:bob@example.com?Replaces=abc%40host%3Bto-tag%3D1%3Bfrom-tag%3D2%3Bearly-only>"
    )
    assert attended.replaces == Replaces("abc@host", "1", "2", early_only=True)


@pytest.mark.parametrize("text", ["<tel:+15551234>", "<sip:@@>", "garbage <<"])
def test_bad_refer_to(text: str) -> None:
    with pytest.raises(HeaderError):
        ReferTo.parse(text)


def test_replaces_round_trip_and_errors() -> None:
    value = Replaces("a@b", "t1", "f1")
    assert Replaces.parse(str(value)) == value
    with pytest.raises(HeaderError):
        Replaces.parse("a@b;to-tag=1")


def test_event_is_a_token_not_a_prefix() -> None:
    assert Event.parse("refer") == Event("refer")
    assert Event.parse("Refer;id=93809824") == Event("refer", "93809824")
    assert Event.parse("refer-foo").package != "refer"
    with pytest.raises(HeaderError):
        Event.parse("re fer")


def test_subscription_state() -> None:
    assert SubscriptionState.parse("active;expires=60") == SubscriptionState(
        SubscriptionStateValue.ACTIVE, 60
    )
    state = SubscriptionState.parse("terminated;reason=noresource")
    assert state.state is SubscriptionStateValue.TERMINATED
    assert state.reason == "noresource"
    assert SubscriptionState.parse(str(state)) == state
    with pytest.raises(HeaderError):
        SubscriptionState.parse("sleeping")


def test_readers_take_compact_forms_and_absence() -> None:
    request = Request(method="NOTIFY", uri=None)  # type: ignore[arg-type]
    request.headers.set("x", "600;refresher=uas")
    request.headers.set("o", "refer")
    request.headers.set("r", "<sip:carol@example.com>")
    assert headers.session_expires(request) == SessionExpires(600, Refresher.UAS)
    assert headers.event(request) == Event("refer")
    refer = headers.refer_to(request)
    assert refer is not None and refer.address.uri.user == "carol"
    assert headers.min_se(request) is None
    assert headers.subscription_state(request) is None
    assert headers.replaces(request) is None
