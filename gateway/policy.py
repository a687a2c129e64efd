"""Dialling policy: which numbers a user may call, and how many calls at once. Pure code.

Patterns (docs/configuration.md, "Dialling policy") are prefixes of the normalised number:
`+44` matches every number that starts with +44. Inside a pattern `X` is any one digit and
`[2-9]` or `[89]` one digit of a set; a final `$` ends the number (`+4930123456$` is that
number only). Everything else is literal. The most specific matching pattern decides (the
one that pins down most characters); on a tie, deny wins. Built-in refusals (international,
high-cost) are deny patterns a little less specific than their prefix, so an `allow` of the
same prefix or a longer one lifts them, and a broader one does not.

A number in international-prefix form that the dial plan left as it was (no country code
set, `0088...`) is judged as the `+` number it dials.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

# Refused unless allowed, whatever the country code (sources in docs/policy.md).
HIGH_COST: tuple[tuple[str, str], ...] = (
    # ITU-T E.164 shared codes: satellite and international networks, billed at up to
    # several euros a minute and the classic target of toll fraud.
    ("+870", "Inmarsat satellite"),
    ("+881", "satellite (Global Mobile Satellite System)"),
    ("+882", "international networks"),
    ("+883", "international networks"),
    ("+979", "international premium rate"),
    # National premium-rate and revenue-sharing ranges.
    ("+1900", "premium rate (NANP 900)"),
    ("+1976", "premium rate (NANP 976)"),
    ("+4409", "premium rate (UK 09, misdialled with the trunk 0)"),
    ("+449", "premium rate (UK 09)"),
    ("+4470", "UK personal numbering (070)"),
    ("+49900", "premium rate (Germany 0900)"),
    ("+49137", "mass-call service (Germany 0137)"),
    ("+3389", "premium rate (France 089)"),
    ("+34803", "premium rate (Spain 803)"),
    ("+34806", "premium rate (Spain 806)"),
    ("+34807", "premium rate (Spain 807)"),
    ("+3989", "premium rate (Italy 89)"),
    ("+31900", "premium rate (Netherlands 0900)"),
    ("+31906", "premium rate (Netherlands 0906)"),
    ("+31909", "premium rate (Netherlands 0909)"),
    ("+43900", "premium rate (Austria 0900)"),
    ("+43930", "premium rate (Austria 0930)"),
    ("+41900", "premium rate (Switzerland 0900)"),
    ("+41901", "premium rate (Switzerland 0901)"),
    ("+41906", "premium rate (Switzerland 0906)"),
    ("+61190", "premium rate (Australia 190)"),
)

# With country code 1, these NANP area codes are other countries (international rates, and
# the "one ring" callback scams): refused as international, like any other country.
NANP_ABROAD = (
    "242 246 264 268 284 345 441 473 649 658 664 721 758 767 784 809 829 849 868 869 876"
).split()

_TOKEN = re.compile(r"\[[0-9\-]+\]|[Xx]|[^\[\]]")
_WINDOW = 60.0


class PolicyError(ValueError):
    """A pattern or policy setting that cannot be used; the message says which and why."""


@dataclass(frozen=True)
class Pattern:
    text: str
    regex: re.Pattern[str] = field(compare=False)
    weight: int  # characters it pins down: more is more specific

    @classmethod
    def parse(cls, text: str) -> Pattern:
        body, exact = (text[:-1], True) if text.endswith("$") else (text, False)
        tokens = _TOKEN.findall(body)
        if not body or "".join(tokens) != body:
            raise PolicyError(f"{text!r} is not a dialling pattern like +44, +1900 or +8[89]X")
        parts = []
        for token in tokens:
            if token in "Xx":
                parts.append("[0-9]")
            elif token.startswith("["):
                parts.append(token)
            else:
                parts.append(re.escape(token))
        try:
            regex = re.compile("".join(parts) + ("$" if exact else ""))
        except re.error:
            raise PolicyError(f"{text!r}: a [...] set must hold digits and ranges") from None
        return cls(text, regex, len(tokens) + exact)

    def matches(self, number: str) -> bool:
        return self.regex.match(number) is not None


@dataclass(frozen=True)
class Rules:
    """Patterns and caps of one user, one account, or the whole gateway ([policy]).
    A cap of None is not set (a user's falls back to [policy]'s); 0 is no limit."""

    allow: tuple[Pattern, ...] = ()
    deny: tuple[Pattern, ...] = ()
    max_calls: int | None = None
    calls_per_minute: int | None = None


@dataclass(frozen=True)
class PolicySettings:
    """[policy]: gateway-wide patterns, per-user caps, and the built-in refusals."""

    rules: Rules = Rules(max_calls=4, calls_per_minute=20)
    refuse_international: bool = True
    refuse_high_cost: bool = True


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str


def _international_denial(number: str, country_code: str | None) -> tuple[str, str] | None:
    """(the prefix it is refused by, why), if `number` is international."""
    if not number.startswith("+"):
        return None
    if country_code is None:
        return "+", "international numbers are refused until allowed (no dialing.country_code)"
    if not number.startswith("+" + country_code):
        return "+", f"numbers outside +{country_code} are refused until allowed"
    if country_code == "1" and number[2:5] in NANP_ABROAD:
        return number[:5], f"+1{number[2:5]} is another NANP country"
    return None


def check_number(
    number: str,
    *,
    settings: PolicySettings,
    country_code: str | None,
    international_prefix: str,
    layers: Iterable[tuple[str, Rules]],
) -> Verdict:
    """Whether `number` (normalised) may be dialled; `layers` are (name, rules) of the
    user, the account and the gateway, named in the reason."""
    view = _as_e164(number, international_prefix)
    matches = _builtin_matches(view, settings, country_code) + _rule_matches(view, layers)
    if not matches:
        return Verdict(True, "no pattern matches")
    _, deny, reason = max(matches, key=lambda m: (m[0], m[1]))
    return Verdict(not deny, reason)


def _as_e164(number: str, international_prefix: str) -> str:
    """`00...` (the international prefix, when normalising left it) as `+...`."""
    if (
        not number.startswith("+")
        and international_prefix
        and number.startswith(international_prefix)
        and len(number) > len(international_prefix)
    ):
        return "+" + number[len(international_prefix) :]
    return number


# (weight, is_deny, reason) of every matching pattern; the heaviest decides. A built-in
# refusal weighs half a character less than its prefix, so an allow of the same prefix
# lifts it, and a broader one (+1 against +1900) does not.
_Match = tuple[float, bool, str]


def _builtin_matches(view: str, settings: PolicySettings, country_code: str | None) -> list[_Match]:
    matches: list[_Match] = []
    if settings.refuse_international:
        international = _international_denial(view, country_code)
        if international is not None:
            prefix, why = international
            matches.append((len(prefix) - 0.5, True, why))
    if settings.refuse_high_cost:
        for prefix, what in HIGH_COST:
            if view.startswith(prefix):
                matches.append((len(prefix) - 0.5, True, f"{prefix} is {what}"))
    return matches


def _rule_matches(view: str, layers: Iterable[tuple[str, Rules]]) -> list[_Match]:
    matches: list[_Match] = []
    for name, rules in layers:
        for pattern in rules.deny:
            if pattern.matches(view):
                matches.append((pattern.weight, True, f"{name} deny {pattern.text}"))
        for pattern in rules.allow:
            if pattern.matches(view):
                matches.append((pattern.weight, False, f"{name} allow {pattern.text}"))
    return matches


# --- caps ---------------------------------------------------------------------------


class CallLimiter:
    """Concurrent calls per user and per account, and calls per minute per user (a sliding
    window of start times). Keys are names; `start` returns a token for `end`."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._active: dict[str, set[object]] = {}
        self._starts: dict[str, deque[float]] = {}

    def active(self, key: str) -> int:
        return len(self._active.get(key, ()))

    def refusal(
        self,
        user: str,
        account: str | None,
        *,
        user_max: int | None,
        per_minute: int | None,
        account_max: int | None,
    ) -> str | None:
        """Why one more call by `user` through `account` is over a cap, or None."""
        # None or 0: no limit.
        if user_max and self.active("user:" + user) >= user_max:
            return f"{user} already has {user_max} calls (max_calls)"
        if account is not None and account_max:
            if self.active("account:" + account) >= account_max:
                return f"account {account} already carries {account_max} calls (max_calls)"
        if per_minute:
            starts = self._window(user)
            if len(starts) >= per_minute:
                return f"{user} placed {per_minute} calls in the last minute (calls_per_minute)"
        return None

    def start(self, user: str, account: str | None) -> object:
        token = object()
        self._active.setdefault("user:" + user, set()).add(token)
        if account is not None:
            self._active.setdefault("account:" + account, set()).add(token)
        self._window(user).append(self._now())
        return token

    def end(self, token: object) -> None:
        for key in [k for k, tokens in self._active.items() if token in tokens]:
            self._active[key].discard(token)
            if not self._active[key]:
                del self._active[key]

    def _window(self, user: str) -> deque[float]:
        starts = self._starts.setdefault(user, deque())
        horizon = self._now() - _WINDOW
        while starts and starts[0] <= horizon:
            starts.popleft()
        if not starts and user not in self._active:
            # Forget idle users, so a stream of one-call guests does not grow the table.
            for key in [k for k, v in self._starts.items() if not v and k != user]:
                del self._starts[key]
        return starts


# --- configuration ------------------------------------------------------------------

RULE_KEYS = {"allow", "deny", "max_calls", "calls_per_minute"}
SETTING_KEYS = RULE_KEYS | {"refuse_international", "refuse_high_cost"}


def _patterns(section: str, table: dict[str, Any], key: str) -> tuple[Pattern, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise PolicyError(f'{section}.{key} must be a list of patterns like ["+44"]')
    try:
        return tuple(Pattern.parse(v) for v in value)
    except PolicyError as exc:
        raise PolicyError(f"{section}.{key}: {exc}") from None


def _cap(section: str, table: dict[str, Any], key: str, default: int | None) -> int | None:
    value = table.get(key, default)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise PolicyError(f"{section}.{key} must be a whole number >= 0 (0: no limit)")
    return value


def parse_rules(section: str, table: dict[str, Any], defaults: Rules = Rules()) -> Rules:
    return Rules(
        allow=_patterns(section, table, "allow"),
        deny=_patterns(section, table, "deny"),
        max_calls=_cap(section, table, "max_calls", defaults.max_calls),
        calls_per_minute=_cap(section, table, "calls_per_minute", defaults.calls_per_minute),
    )


def parse_settings(table: dict[str, Any]) -> PolicySettings:
    default = PolicySettings()
    flags = {}
    for key in ("refuse_international", "refuse_high_cost"):
        value = table.get(key, getattr(default, key))
        if not isinstance(value, bool):
            raise PolicyError(f"policy.{key} must be true or false")
        flags[key] = value
    return PolicySettings(rules=parse_rules("policy", table, default.rules), **flags)
