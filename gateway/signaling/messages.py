"""What the signalling side (not a call) says to a page, as typed values (docs/protocol.md).

Each message is built here and only here, and each is a `PageMessage` (gateway/calls/page.py):
`to_json()` gives the JSON object the page receives. The call layer's own messages
(ringing, answer, hangup...) are its business (gateway/calls/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.sip.registration import RegistrationState, RegistrationStatus

_STATES = frozenset(s.value for s in RegistrationState)


@dataclass(frozen=True)
class Error:
    """A request the gateway refused or could not handle; `call_id` when it was about a call."""

    code: str
    message: str
    call_id: str | None = None

    def to_json(self) -> dict[str, Any]:
        reply: dict[str, Any] = {"type": "error", "code": self.code, "message": self.message}
        if self.call_id is not None:
            reply["id"] = self.call_id
        return reply


@dataclass(frozen=True)
class Registration:
    """An account's SIP registration state: sent to every page when it changes, and one
    entry of `welcome.registrations` (the same object without `type`)."""

    account: str
    state: str
    reason: str | None = None
    code: int | None = None
    expires: int | None = None

    @classmethod
    def of(cls, account: str, status: RegistrationStatus) -> Registration:
        return cls(account, status.state.value, status.reason, status.code, status.expires)

    @classmethod
    def parse(cls, entry: object) -> Registration:
        """From another worker's entry (gateway/cluster/); ValueError if it is not one."""
        if not isinstance(entry, dict):
            raise ValueError("registration entry is not an object")
        account, state = entry.get("account"), entry.get("state")
        if not isinstance(account, str) or state not in _STATES:
            raise ValueError("registration entry without account or a known state")
        reason, code, expires = entry.get("reason"), entry.get("code"), entry.get("expires")
        if reason is not None and not isinstance(reason, str):
            raise ValueError("registration reason is not a string")
        for number in (code, expires):
            if number is not None and (not isinstance(number, int) or isinstance(number, bool)):
                raise ValueError("registration code and expires are integers")
        return cls(account, str(state), reason, code, expires)

    def entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"account": self.account, "state": self.state}
        for key in ("reason", "code", "expires"):
            value = getattr(self, key)
            if value is not None:
                entry[key] = value
        return entry

    def to_json(self) -> dict[str, Any]:
        return {"type": "registration", **self.entry()}


@dataclass(frozen=True)
class Welcome:
    """The reply to an accepted `hello`."""

    session: str
    user: str
    ice_servers: list[dict[str, Any]]
    demo: dict[str, str] | None
    registrations: list[Registration] = field(default_factory=list)
    extension: str | None = None
    # The gateway worker holding this socket, with server.workers > 1.
    worker: int | None = None
    relay_only: bool = False

    def to_json(self) -> dict[str, Any]:
        welcome: dict[str, Any] = {
            "type": "welcome",
            "session": self.session,
            "iceServers": self.ice_servers,
            "demo": self.demo,
            "user": self.user,
            "registrations": [r.entry() for r in self.registrations],
        }
        if self.extension:
            welcome["extension"] = self.extension
        if self.worker is not None:
            welcome["worker"] = self.worker
        if self.relay_only:
            welcome["iceTransportPolicy"] = "relay"
        return welcome


@dataclass(frozen=True)
class Relayed:
    """A message another worker's call sent to a page here (gateway/cluster/), already in
    its JSON form there; passed on as it came."""

    message: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return self.message
