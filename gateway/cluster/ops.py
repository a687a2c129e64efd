"""What workers tell each other over their Unix datagram sockets: one typed value per op.

Every datagram is one JSON object with `op` and `from` (the sending worker's index).
`parse` checks it whole, field by field, before anything acts on it: a datagram that is
not one of these is refused with `ValueError` and dropped by the receiver.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from gateway.signaling.messages import Registration

# Session ids are 16 hex digits (signaling/session.py); call ids are the page's (<= 128).
MAX_ID = 128


def _id(data: dict[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID:
        raise ValueError(f"{key} must be a non-empty string of at most {MAX_ID} characters")
    return value


class _Ids:
    """An op whose fields are all ids (session, call, user name): encoded as they are,
    each checked by `_id` when parsed."""

    op: ClassVar[str]

    def fields(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload, no-any-return]

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Self:
        return cls(**{f.name: _id(data, f.name) for f in dataclasses.fields(cls)})  # type: ignore[arg-type]


@dataclass(frozen=True)
class Sync(_Ids):
    """A worker started: tell it your pages and registrations."""

    op: ClassVar[str] = "sync"


@dataclass(frozen=True)
class Announce(_Ids):
    """A page said hello on the sender: its user's calls may ring it from anywhere."""

    op: ClassVar[str] = "session"
    session: str
    user: str


@dataclass(frozen=True)
class Withdraw(_Ids):
    """A page is gone (or was never there, when a call's worker named it too late)."""

    op: ClassVar[str] = "gone"
    session: str


@dataclass(frozen=True)
class RegistrationChanged:
    """An account's registration changed on the sender (only the first worker registers)."""

    op: ClassVar[str] = "registration"
    registration: Registration

    def fields(self) -> dict[str, Any]:
        return {"entry": self.registration.entry()}

    @classmethod
    def parse(cls, data: dict[str, Any]) -> RegistrationChanged:
        return cls(Registration.parse(data.get("entry")))


@dataclass(frozen=True)
class Request:
    """A page's request (its JSON text as it came) for a call the receiver owns."""

    op: ClassVar[str] = "request"
    session: str
    text: str

    def fields(self) -> dict[str, Any]:
        return {"session": self.session, "text": self.text}

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Request:
        text = data.get("text")
        if not isinstance(text, str):
            raise ValueError("text must be a string")
        return cls(_id(data, "session"), text)


@dataclass(frozen=True)
class Notify:
    """A call on the sender tells a page on the receiver something (a page message)."""

    op: ClassVar[str] = "notify"
    session: str
    message: dict[str, Any]

    def fields(self) -> dict[str, Any]:
        return {"session": self.session, "message": self.message}

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Notify:
        message = data.get("message")
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            raise ValueError("message must be an object with a type")
        return cls(_id(data, "session"), message)


@dataclass(frozen=True)
class Adopt(_Ids):
    """A call on the sender now rings (or belongs to) a page on the receiver."""

    op: ClassVar[str] = "adopt"
    session: str
    call: str


@dataclass(frozen=True)
class Release(_Ids):
    """The page on the receiver is done with a call on the sender."""

    op: ClassVar[str] = "release"
    session: str
    call: str


Op = Sync | Announce | Withdraw | RegistrationChanged | Request | Notify | Adopt | Release
ToPage = Notify | Adopt | Release
_OPS: dict[str, Any] = {
    kind.op: kind
    for kind in (Sync, Announce, Withdraw, RegistrationChanged, Request, Notify, Adopt, Release)
}


def encode(op: Op, sender: int) -> bytes:
    return json.dumps({"op": op.op, **op.fields(), "from": sender}, separators=(",", ":")).encode()


def decode(data: bytes, workers: int) -> tuple[int, Op]:
    """(sending worker, op) of a datagram; ValueError if it is not a valid one."""
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ValueError("not a JSON object")
    sender = message.get("from")
    if not isinstance(sender, int) or isinstance(sender, bool) or not 0 <= sender < workers:
        raise ValueError(f"from must be a worker index below {workers}")
    name = message.get("op")
    kind = _OPS.get(name) if isinstance(name, str) else None
    if kind is None:
        raise ValueError(f"unknown op {str(name)[:32]!r}")
    op: Op = kind.parse(message)
    return sender, op
