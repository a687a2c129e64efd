from __future__ import annotations

from dataclasses import replace

import pytest

from gateway.config import DialPlan, parse_trunk
from gateway.dialplan import DialError, choose_account, normalise

GERMANY = DialPlan(country_code="49")


@pytest.mark.parametrize(
    ("typed", "plan", "expected"),
    [
        ("600", DialPlan(), "600"),
        (" 030-1234 5678 ", DialPlan(), "03012345678"),
        ("030 12345678", GERMANY, "+493012345678"),
        ("0044 20 7946 0958", GERMANY, "+442079460958"),
        ("+1 (415) 555-0100", GERMANY, "+14155550100"),
        ("1001", GERMANY, "1001"),  # an extension stays an extension
        ("*97", GERMANY, "*97"),
        ("alice", GERMANY, "alice"),
    ],
)
def test_normalise(typed: str, plan: DialPlan, expected: str) -> None:
    assert normalise(typed, plan) == expected


@pytest.mark.parametrize("typed", ["", "sip:x@y", "12;34", "a" * 70, "1\x00"])
def test_undialable(typed: str) -> None:
    with pytest.raises(DialError):
        normalise(typed, GERMANY)


def test_account_by_longest_prefix() -> None:
    pbx = replace(parse_trunk("sip:pbx.local"), name="pbx")
    carrier = replace(parse_trunk("sip:carrier.example"), name="carrier", prefixes=("+",))
    uk = replace(parse_trunk("sip:uk.example"), name="uk", prefixes=("+44",))
    accounts = [carrier, uk, pbx]
    assert choose_account("+442079460958", accounts) is uk
    assert choose_account("+14155550100", accounts) is carrier
    assert choose_account("1001", accounts) is pbx
    assert choose_account("1001", [carrier]) is carrier
    assert choose_account("1001", []) is None
