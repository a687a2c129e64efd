"""Typed values of the headers the dialog and call layers act on.

Session-Expires and Min-SE (RFC 4028), Refer-To (RFC 3515), Event and Subscription-State
(RFC 6665), Replaces (RFC 3891): parsed whole, instead of read by substring, so that
`Session-Expires: 1800;refresher=uas` and `session-expires:1800 ; REFRESHER = UAS` mean the
same and `Event: refer-foo` is not `refer`. Every parse raises `HeaderError` (a fresh
ValueError, never a library's shared exception object) with a reason fit for a 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, TypeVar
from urllib.parse import unquote

from sipmessage import Address

from gateway.sip import message as sipmsg

_V = TypeVar("_V")
# RFC 4028 section 4: the smallest Session-Expires anyone may ask for.
MIN_SESSION_EXPIRES = 90
_DELTA = re.compile(r"\d{1,10}")
_TOKEN = re.compile(r"[A-Za-z0-9\-.!%*_+`'~]+")


class HeaderError(ValueError):
    """A header value that cannot be used; str() is the reason."""


class HasHeaders(Protocol):
    """A Request or Response: only its headers are read here."""

    @property
    def headers(self) -> _Headers: ...


class _Headers(Protocol):
    def get(self, key: str, default: str | None = None) -> str | None: ...


def _params(text: str) -> tuple[str, dict[str, str | None]]:
    """`value;name=x;flag` -> ("value", {"name": "x", "flag": None}), names lower-cased."""
    value, *rest = text.split(";")
    params: dict[str, str | None] = {}
    for item in rest:
        name, eq, param = item.partition("=")
        name = name.strip().lower()
        if not name:
            raise HeaderError(f"empty parameter in {text!r}")
        params[name] = param.strip().strip('"') if eq else None
    return value.strip(), params


def _delta(text: str, what: str) -> int:
    if not _DELTA.fullmatch(text):
        raise HeaderError(f"{what}: {text!r} is not a number of seconds")
    return int(text)


class Refresher(StrEnum):
    UAC = "uac"
    UAS = "uas"


@dataclass(frozen=True)
class SessionExpires:
    """RFC 4028 section 4: the interval, and who refreshes (None: not said yet)."""

    seconds: int
    refresher: Refresher | None = None

    @classmethod
    def parse(cls, text: str) -> SessionExpires:
        value, params = _params(text)
        seconds = _delta(value, "Session-Expires")
        refresher = params.get("refresher")
        if refresher is None:
            return cls(seconds)
        try:
            return cls(seconds, Refresher(refresher.lower()))
        except ValueError:
            raise HeaderError(f"Session-Expires: refresher {refresher!r}") from None

    def __str__(self) -> str:
        if self.refresher is None:
            return str(self.seconds)
        return f"{self.seconds};refresher={self.refresher.value}"


@dataclass(frozen=True)
class MinSE:
    """RFC 4028 section 5: the smallest interval the sender accepts."""

    seconds: int

    @classmethod
    def parse(cls, text: str) -> MinSE:
        value, _ = _params(text)
        return cls(_delta(value, "Min-SE"))

    def __str__(self) -> str:
        return str(self.seconds)


@dataclass(frozen=True)
class Replaces:
    """RFC 3891: the dialog a new INVITE takes the place of."""

    call_id: str
    to_tag: str
    from_tag: str
    early_only: bool = False

    @classmethod
    def parse(cls, text: str) -> Replaces:
        call_id, params = _params(text)
        to_tag, from_tag = params.get("to-tag"), params.get("from-tag")
        if not call_id or not to_tag or not from_tag:
            raise HeaderError("Replaces needs a Call-ID, to-tag and from-tag")
        return cls(call_id, to_tag, from_tag, "early-only" in params)

    def __str__(self) -> str:
        early = ";early-only" if self.early_only else ""
        return f"{self.call_id};to-tag={self.to_tag};from-tag={self.from_tag}{early}"


@dataclass(frozen=True)
class ReferTo:
    """RFC 3515: the target of a transfer; an attended transfer embeds Replaces in the URI's
    headers part (`sip:bob@example.com?Replaces=call%40host%3Bto-tag%3D1%3Bfrom-tag%3D2`)."""

    address: Address
    replaces: Replaces | None = None

    @classmethod
    def parse(cls, text: str) -> ReferTo:
        # sipmessage's URI has no headers part: read it here, parse the address without it.
        embedded = _embedded_replaces(text)
        if "<" in text and "?" in text:
            text = re.sub(r"\?[^>]*>", ">", text, count=1)
        try:
            address = sipmsg.parse_address(text)
        except sipmsg.SipParseError as exc:
            raise HeaderError(f"Refer-To: {exc.reason}") from None
        if address.uri.scheme not in ("sip", "sips"):
            raise HeaderError(f"Refer-To: scheme {address.uri.scheme!r} is not sip or sips")
        return cls(address, embedded)

    def __str__(self) -> str:
        return str(self.address)


def _embedded_replaces(text: str) -> Replaces | None:
    """The URI's `?Replaces=...` header, percent-decoded (RFC 3261 section 19.1.1)."""
    inner = text[text.find("<") + 1 : text.rfind(">")] if "<" in text else text
    _, question, headers = inner.partition("?")
    if not question:
        return None
    for item in headers.split("&"):
        name, _, value = item.partition("=")
        if name.strip().lower() == "replaces":
            return Replaces.parse(unquote(value))
    return None


@dataclass(frozen=True)
class Event:
    """RFC 6665 section 8.2.1: the event package and its optional id."""

    package: str
    id: str | None = None

    @classmethod
    def parse(cls, text: str) -> Event:
        package, params = _params(text)
        if not _TOKEN.fullmatch(package):
            raise HeaderError(f"Event: {package!r} is not a package name")
        return cls(package.lower(), params.get("id"))

    def __str__(self) -> str:
        return self.package if self.id is None else f"{self.package};id={self.id}"


class SubscriptionStateValue(StrEnum):
    ACTIVE = "active"
    PENDING = "pending"
    TERMINATED = "terminated"


@dataclass(frozen=True)
class SubscriptionState:
    """RFC 6665 section 8.2.3."""

    state: SubscriptionStateValue
    expires: int | None = None
    reason: str | None = None

    @classmethod
    def parse(cls, text: str) -> SubscriptionState:
        value, params = _params(text)
        try:
            state = SubscriptionStateValue(value.lower())
        except ValueError:
            raise HeaderError(f"Subscription-State: {value!r}") from None
        expires = params.get("expires")
        return cls(
            state,
            _delta(expires, "Subscription-State expires") if expires is not None else None,
            params.get("reason"),
        )

    def __str__(self) -> str:
        text = self.state.value
        if self.reason is not None:
            text += f";reason={self.reason}"
        if self.expires is not None:
            text += f";expires={self.expires}"
        return text


# Compact forms (RFC 3261 section 7.3.3, RFC 3515, RFC 6665, RFC 4028).
_COMPACT = {"Session-Expires": "x", "Refer-To": "r", "Event": "o"}


def _read(message: HasHeaders, name: str, parse: Callable[[str], _V]) -> _V | None:
    """The header's typed value, None if absent; HeaderError if unusable."""
    text = _get(message, name)
    return None if text is None else parse(text)


def session_expires(message: HasHeaders) -> SessionExpires | None:
    return _read(message, "Session-Expires", SessionExpires.parse)


def min_se(message: HasHeaders) -> MinSE | None:
    return _read(message, "Min-SE", MinSE.parse)


def refer_to(message: HasHeaders) -> ReferTo | None:
    return _read(message, "Refer-To", ReferTo.parse)


def event(message: HasHeaders) -> Event | None:
    return _read(message, "Event", Event.parse)


def subscription_state(message: HasHeaders) -> SubscriptionState | None:
    return _read(message, "Subscription-State", SubscriptionState.parse)


def replaces(message: HasHeaders) -> Replaces | None:
    return _read(message, "Replaces", Replaces.parse)


def _get(message: HasHeaders, name: str) -> str | None:
    value = message.headers.get(name)
    if value is None and name in _COMPACT:
        value = message.headers.get(_COMPACT[name])
    return value
