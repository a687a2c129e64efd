"""What a person dials -> the number a trunk expects, and which account carries it."""

from __future__ import annotations

import re
from collections.abc import Sequence

from gateway.config import DialPlan, Trunk

_SEPARATORS = re.compile(r"[\s().\-/]")
_DIALABLE = re.compile(r"^\+?[0-9A-Za-z*#_]{1,64}$")


class DialError(ValueError):
    """Not something that can be dialled; the message is shown to the user."""


def normalise(text: str, plan: DialPlan) -> str:
    """Strip visual separators; with a country code, turn national and international
    forms into E.164 (+CC...), leaving short internal extensions as they are."""
    number = _SEPARATORS.sub("", text.strip())
    if not _DIALABLE.match(number):
        raise DialError(f"{text[:40]!r} is not a number or extension that can be dialled")
    if number.startswith("+") or plan.country_code is None or not number.isdigit():
        return number
    if plan.international_prefix and number.startswith(plan.international_prefix):
        return "+" + number[len(plan.international_prefix) :]
    # A national number has more digits than any extension plan we expect (RFC 3966 says
    # nothing here; 7 is the shortest national significant number in common use).
    if plan.national_prefix and number.startswith(plan.national_prefix) and len(number) > 7:
        return f"+{plan.country_code}{number[len(plan.national_prefix) :]}"
    return number


def choose_account(number: str, accounts: Sequence[Trunk]) -> Trunk | None:
    """The account whose longest prefix matches; else the first without prefixes; else the first."""
    best: tuple[int, Trunk] | None = None
    for account in accounts:
        for prefix in account.prefixes:
            if number.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), account)
    if best is not None:
        return best[1]
    default = next((a for a in accounts if not a.prefixes), None)
    return default or (accounts[0] if accounts else None)


def credential_hosts(account: Trunk) -> frozenset[str]:
    """The hosts that may challenge us for this account's password: its own host, its
    outbound proxy, and its realm when that is set (a realm is often the domain)."""
    hosts = {account.uri.host, account.peer.host}
    if account.outbound_proxy is not None:
        hosts.add(account.outbound_proxy.host)
    if account.credentials is not None and account.credentials.realm:
        hosts.add(account.credentials.realm)
    return frozenset(h.strip("[]") for h in hosts)
