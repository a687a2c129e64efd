"""What the call layer says to a page, as typed values, and the Protocols between them.

The contract between calls and pages: every message a call sends to a page is a
`PageMessage`, whose `to_json()` gives the protocol's JSON object (docs/protocol.md). The
session turns it into JSON once, when it queues it; nothing above the call layer builds a
call's message by hand. `SessionHost` is what a call needs from a page session, `PageCall`
what a session needs from a call.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from sipmessage import URI

    from gateway.config import User


class PageMessage(Protocol):
    def to_json(self) -> dict[str, Any]:
        """The message as the page receives it: a JSON object with `type`."""
        ...


@dataclass(frozen=True)
class Incoming:
    """A call rings on this page; `sdp` is the gateway's (or the caller's) offer."""

    id: str
    caller: str
    sdp: str
    caller_name: str = ""

    def to_json(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "incoming", "id": self.id, "from": self.caller}
        message["sdp"] = self.sdp
        if self.caller_name:
            message["fromName"] = self.caller_name
        return message


@dataclass(frozen=True)
class Ringing:
    id: str
    code: int

    def to_json(self) -> dict[str, Any]:
        return {"type": "ringing", "id": self.id, "code": self.code}


@dataclass(frozen=True)
class Progress:
    """Early media: the answer to the page's offer, before the call is answered."""

    id: str
    sdp: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "progress", "id": self.id, "sdp": self.sdp}


@dataclass(frozen=True)
class Answer:
    """The call is answered; `sdp` only for the page that made the offer."""

    id: str
    sdp: str | None = None

    def to_json(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "answer", "id": self.id}
        if self.sdp is not None:
            message["sdp"] = self.sdp
        return message


@dataclass(frozen=True)
class Hangup:
    id: str
    code: int
    reason: str
    by: str  # "local" (this page), "remote" or "gateway"

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "hangup",
            "id": self.id,
            "code": self.code,
            "reason": self.reason,
            "by": self.by,
        }


@dataclass(frozen=True)
class Held:
    id: str
    held: bool
    by: str  # "local" or "remote"

    def to_json(self) -> dict[str, Any]:
        return {"type": "held", "id": self.id, "held": self.held, "by": self.by}


@dataclass(frozen=True)
class TransferProgress:
    id: str
    state: str  # trying, accepted, ringing, done, failed
    code: int | None = None
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        message: dict[str, Any] = {"type": "transfer", "id": self.id, "state": self.state}
        if self.code is not None:
            message.update(code=self.code, reason=self.reason)
        return message


@dataclass(frozen=True)
class Transferred:
    """The far end moved this call to another party (it sent us a REFER)."""

    id: str
    to: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "transferred", "id": self.id, "to": self.to}


@dataclass(frozen=True)
class Dtmf:
    id: str
    digit: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "dtmf", "id": self.id, "digit": self.digit}


@dataclass(frozen=True)
class CallFailed:
    """A call-level error the page shows (`error` with the call's id)."""

    id: str
    code: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return {"type": "error", "id": self.id, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Candidate:
    """Trickle ICE between two pages (browser-to-browser calls)."""

    id: str
    candidate: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"type": "candidate", "id": self.id, "candidate": self.candidate}


class SessionHost(Protocol):
    """What a call needs from a page session: who, how to tell it, and to be known by it."""

    # Read-only: a session on another worker always has a user, a local one may not yet.
    @property
    def id(self) -> str: ...

    @property
    def user(self) -> User | None: ...

    @property
    def peer(self) -> str: ...

    def notify(self, message: PageMessage) -> None: ...

    def adopt(self, call: PageCall) -> None: ...

    def release(self, call: PageCall) -> None: ...


class PageCall(Protocol):
    """What a page session needs from a call, whatever its kind."""

    @property
    def id(self) -> str: ...

    @property
    def active(self) -> bool: ...

    @property
    def ended(self) -> asyncio.Future[Any]: ...

    def describe(self) -> dict[str, Any]: ...

    def accept(self, session: SessionHost, answer: str) -> None: ...

    def reject(self, session: SessionHost, code: int) -> None: ...

    def hangup(self, session: SessionHost | None = None) -> None: ...

    def leave(self, session: SessionHost) -> None: ...

    def candidate(self, session: SessionHost, candidate: dict[str, Any] | None) -> None: ...

    async def send_dtmf(self, digits: str) -> None: ...

    async def hold(self, on: bool) -> None: ...

    async def transfer(self, to: str, target: URI) -> None: ...

    async def close(self, reason: str = ...) -> None: ...
