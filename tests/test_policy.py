"""gateway.policy: dialling patterns, the built-in refusals, and the call caps (pure)."""

from __future__ import annotations

import pytest

from gateway.config import ConfigError, DialPlan, from_mapping
from gateway.dialplan import normalise
from gateway.policy import (
    CallLimiter,
    Pattern,
    PolicyError,
    PolicySettings,
    Rules,
    check_number,
)

UK = DialPlan(country_code="44")
NO_CC = DialPlan()
NONE = Rules()
DEFAULTS = PolicySettings()


def allowed(
    typed: str,
    plan: DialPlan = UK,
    *,
    user: Rules = NONE,
    account: Rules = NONE,
    settings: PolicySettings = DEFAULTS,
) -> bool:
    number = normalise(typed, plan)
    verdict = check_number(
        number,
        settings=settings,
        country_code=plan.country_code,
        international_prefix=plan.international_prefix,
        layers=[("user alice", user), ("account carrier", account), ("policy", settings.rules)],
    )
    return verdict.allowed


def rules(allow: tuple[str, ...] = (), deny: tuple[str, ...] = ()) -> Rules:
    return Rules(
        allow=tuple(Pattern.parse(p) for p in allow), deny=tuple(Pattern.parse(p) for p in deny)
    )


@pytest.mark.parametrize(
    "typed",
    [
        "+1 900 555 0100",  # NANP premium
        "00881 6 1234 5678",  # satellite, in international-prefix form
        "+882 1234 5678",  # international networks
        "+883 5100 1234",
        "+870 7712 3456",  # Inmarsat
        "09065 123456",  # UK premium, national form -> +449065...
        "+44 70 1234 5678",  # UK personal numbering
        "+33 1 23 45 67 89",  # international: outside +44
    ],
)
def test_built_in_refusals_with_a_country_code(typed: str) -> None:
    assert not allowed(typed)


@pytest.mark.parametrize(
    "typed",
    [
        "020 7946 0958",  # London
        "0118 496 0000",  # Reading: 0118 is a geographic code, not directory enquiries
        "07700 900123",  # UK mobile
        "0800 123 4567",  # freephone
        "600",  # extensions are not E.164: the demo's 600/601 still work
        "*43",
    ],
)
def test_ordinary_numbers_are_allowed(typed: str) -> None:
    assert allowed(typed)


def test_without_a_country_code_every_international_number_is_refused() -> None:
    for typed in ("+442079460958", "00442079460958", "+19005550100", "00881612345678"):
        assert not allowed(typed, NO_CC), typed
    # National-form numbers and extensions pass; nothing says what country they are in.
    assert allowed("02079460958", NO_CC)
    assert allowed("601", NO_CC)


def test_an_allow_lifts_the_built_in_refusal_of_its_prefix_but_not_a_narrower_one() -> None:
    user = rules(allow=("+1",))
    assert allowed("+1 415 555 0100", user=user)
    assert not allowed("+1 900 555 0100", user=user)  # +1900 is more specific than +1
    assert allowed("+1 900 555 0100", user=rules(allow=("+1900",)))
    # "+" lifts the international refusal for everything but the high-cost list.
    everywhere = rules(allow=("+",))
    assert allowed("+33123456789", user=everywhere)
    assert not allowed("+881612345678", user=everywhere)


def test_most_specific_wins_and_deny_wins_a_tie() -> None:
    assert not allowed("020 7946 0958", account=rules(deny=("+4420",)))
    assert allowed("020 7946 0958", account=rules(deny=("+44",)), user=rules(allow=("+4420",)))
    tie = {"account": rules(deny=("+4420",)), "user": rules(allow=("+4420",))}
    assert not allowed("020 7946 0958", **tie)
    # A whitelist: nothing but London.
    only_london = rules(allow=("+4420",), deny=("+",))
    assert allowed("020 7946 0958", user=only_london)
    assert not allowed("07700 900123", user=only_london)


def test_pattern_syntax() -> None:
    satellite = Pattern.parse("+8[89]X")
    assert satellite.matches("+8816123") and satellite.matches("+8829")
    assert not satellite.matches("+8716123") and not satellite.matches("+88")
    exact = Pattern.parse("+442079460958$")
    assert exact.matches("+442079460958") and not exact.matches("+4420794609581")
    assert Pattern.parse("+1[2-9]XX").weight == 5
    for bad in ("", "+4[4", "+4]4", "+[a]"):
        with pytest.raises(PolicyError):
            Pattern.parse(bad)


def test_nanp_countries_outside_us_and_canada_are_international_for_country_code_1() -> None:
    us = DialPlan(country_code="1", international_prefix="011", national_prefix="1")
    assert allowed("+1 415 555 0100", us)
    assert not allowed("+1 876 555 0100", us)  # Jamaica
    assert not allowed("1 900 555 0100", us)
    assert not allowed("011 44 20 7946 0958", us)


def test_settings_switch_off_the_built_ins() -> None:
    off = PolicySettings(refuse_international=False, refuse_high_cost=False)
    assert allowed("+1 900 555 0100", settings=off)
    only_cost = PolicySettings(refuse_international=False)
    assert allowed("+33 1 23 45 67 89", settings=only_cost)
    assert not allowed("+33 8 99 12 34 56", settings=only_cost)  # French 089 premium


def test_concurrent_caps_per_user_and_per_account() -> None:
    limiter = CallLimiter()
    caps = {"user_max": 2, "per_minute": None, "account_max": 3}
    tokens = [limiter.start("alice", "carrier") for _ in range(2)]
    assert "max_calls" in (limiter.refusal("alice", "carrier", **caps) or "")
    limiter.start("bob", "carrier")
    assert limiter.refusal("carol", None, **caps) is None  # browser to browser: no account
    assert "account carrier" in (limiter.refusal("carol", "carrier", **caps) or "")
    limiter.end(tokens[0])
    assert limiter.refusal("alice", "other", **caps) is None
    assert limiter.active("user:alice") == 1


def test_calls_per_minute_is_a_sliding_window() -> None:
    now = [1000.0]
    limiter = CallLimiter(now=lambda: now[0])
    caps = {"user_max": None, "per_minute": 3, "account_max": None}
    for _ in range(3):
        limiter.end(limiter.start("alice", None))  # short calls: only the rate counts
        now[0] += 10
    assert "calls_per_minute" in (limiter.refusal("alice", None, **caps) or "")
    now[0] = 1000.0 + 60.5  # the first start left the window
    assert limiter.refusal("alice", None, **caps) is None
    limiter.start("alice", None)
    assert limiter.refusal("alice", None, **caps) is not None
    assert limiter.refusal("bob", None, **caps) is None


def test_config_keys() -> None:
    config = from_mapping(
        {
            "policy": {"allow": ["+33"], "max_calls": 0, "calls_per_minute": 5},
            "users": [{"name": "alice", "deny": ["+4470"], "max_calls": 1}],
            "trunk": {"uri": "sip:carrier.example", "max_calls": 30, "redirect": "none"},
        }
    )
    assert config.policy.rules.allow == (Pattern.parse("+33"),)
    assert (config.policy.rules.max_calls, config.policy.rules.calls_per_minute) == (0, 5)
    (alice,) = config.users
    assert (alice.policy.max_calls, alice.policy.calls_per_minute) == (1, None)
    assert config.trunk is not None
    assert (config.trunk.policy.max_calls, config.trunk.redirect) == (30, "none")
    # Defaults: safe ones.
    default = from_mapping({}).policy
    assert default.refuse_international and default.refuse_high_cost
    assert (default.rules.max_calls, default.rules.calls_per_minute) == (4, 20)
    for bad in (
        {"policy": {"allow": ["+4[4"]}},
        {"policy": {"max_calls": -1}},
        {"policy": {"refuse_high_cost": "no"}},
        {"trunk": {"uri": "sip:x", "redirect": "anywhere"}},
        {"trunk": {"uri": "sip:x", "calls_per_minute": 3}},
    ):
        with pytest.raises(ConfigError):
            from_mapping(bad)
