"""The browser protocol: JSON objects with a `type`, validated into typed messages.

See docs/protocol.md. Validation never raises anything but ProtocolError, whose code and
message go back to the page in an `error` while the socket stays open.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_MESSAGE_BYTES = 256 * 1024
MAX_SDP_BYTES = 64 * 1024
MAX_ID_LENGTH = 128
DTMF_DIGITS = set("0123456789*#ABCDabcd")


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, call_id: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.call_id = call_id


@dataclass(frozen=True)
class Hello:
    token: str | None
    user: str | None


@dataclass(frozen=True)
class Call:
    id: str
    to: str
    sdp: str


@dataclass(frozen=True)
class Hangup:
    id: str


@dataclass(frozen=True)
class Candidate:
    id: str
    candidate: dict[str, Any] | None


@dataclass(frozen=True)
class Dtmf:
    id: str
    digits: str


@dataclass(frozen=True)
class Accept:
    id: str
    sdp: str


@dataclass(frozen=True)
class Reject:
    id: str
    code: int


@dataclass(frozen=True)
class Hold:
    id: str
    on: bool


@dataclass(frozen=True)
class Transfer:
    id: str
    to: str


ClientMessage = Hello | Call | Hangup | Candidate | Dtmf | Accept | Reject | Hold | Transfer
REJECT_CODES = {486, 480, 603, 488, 403}


def _string(obj: dict[str, Any], key: str, *, limit: int, required: bool = True) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or (required and not value):
        raise ProtocolError("bad-message", f"'{key}' must be a non-empty string", _id(obj))
    if len(value) > limit:
        raise ProtocolError("bad-message", f"'{key}' is longer than {limit} characters", _id(obj))
    return value


def _id(obj: dict[str, Any]) -> str | None:
    value = obj.get("id")
    return value if isinstance(value, str) and len(value) <= MAX_ID_LENGTH else None


def _call_id(obj: dict[str, Any]) -> str:
    value = _string(obj, "id", limit=MAX_ID_LENGTH)
    assert value is not None  # required=True
    return value


def _candidate(obj: dict[str, Any]) -> dict[str, Any] | None:
    """An RTCIceCandidateInit with the types the other page expects, and nothing else: it
    is relayed to another browser (peer calls), which must not get junk or Infinity."""
    candidate = obj.get("candidate")
    if candidate is None:
        return None
    if not isinstance(candidate, dict):
        raise ProtocolError("bad-message", "'candidate' must be an object or null", _id(obj))
    clean: dict[str, Any] = {}
    for key, limit in (("candidate", 2048), ("sdpMid", 64), ("usernameFragment", 256)):
        value = candidate.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > limit):
            raise ProtocolError("bad-message", f"'candidate.{key}' must be a string", _id(obj))
        if value is not None:
            clean[key] = value
    if "candidate" not in clean:
        raise ProtocolError("bad-message", "'candidate.candidate' must be a string", _id(obj))
    index = candidate.get("sdpMLineIndex")
    if index is not None:
        if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < 1024:
            raise ProtocolError("bad-message", "'candidate.sdpMLineIndex' must be 0-1023", _id(obj))
        clean["sdpMLineIndex"] = index
    return clean


def parse(text: str | bytes) -> ClientMessage:
    if len(text) > MAX_MESSAGE_BYTES:
        raise ProtocolError("bad-message", "message too large")
    try:
        obj = json.loads(text)
    except RecursionError:
        # "[" * 100000: the decoder recurses per level; one error, never a traceback.
        raise ProtocolError("bad-json", "not valid JSON: nested too deeply") from None
    except ValueError as exc:
        # Also UnicodeDecodeError (a binary frame) and int('9' * 5000)'s digit limit.
        raise ProtocolError("bad-json", f"not valid JSON: {str(exc)[:120]}") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad-message", "a message must be a JSON object")
    kind = obj.get("type")
    if not isinstance(kind, str):
        raise ProtocolError("bad-message", "a message needs a string 'type'", _id(obj))
    parser = _PARSERS.get(kind)
    if parser is None:
        raise ProtocolError("unknown-type", f"unknown message type {kind[:40]!r}", _id(obj))
    return parser(obj)


def _required(obj: dict[str, Any], key: str, *, limit: int) -> str:
    value = _string(obj, key, limit=limit)
    assert value is not None  # required=True
    return value


def _hello(obj: dict[str, Any]) -> Hello:
    return Hello(
        token=_string(obj, "token", limit=4096, required=False),
        user=_string(obj, "user", limit=128, required=False),
    )


def _call(obj: dict[str, Any]) -> Call:
    to = _required(obj, "to", limit=256)
    sdp = _required(obj, "sdp", limit=MAX_SDP_BYTES)
    return Call(id=_call_id(obj), to=to.strip(), sdp=sdp)


def _hangup(obj: dict[str, Any]) -> Hangup:
    return Hangup(id=_call_id(obj))


def _candidate_message(obj: dict[str, Any]) -> Candidate:
    return Candidate(id=_call_id(obj), candidate=_candidate(obj))


def _dtmf(obj: dict[str, Any]) -> Dtmf:
    digits = _required(obj, "digits", limit=64)
    if not set(digits) <= DTMF_DIGITS:
        raise ProtocolError("bad-message", "'digits' may only hold 0-9, *, # and A-D", _id(obj))
    return Dtmf(id=_call_id(obj), digits=digits)


def _accept(obj: dict[str, Any]) -> Accept:
    sdp = _required(obj, "sdp", limit=MAX_SDP_BYTES)
    return Accept(id=_call_id(obj), sdp=sdp)


def _reject(obj: dict[str, Any]) -> Reject:
    code = obj.get("code", 486)
    if not isinstance(code, int) or isinstance(code, bool) or code not in REJECT_CODES:
        allowed = ", ".join(str(c) for c in sorted(REJECT_CODES))
        raise ProtocolError("bad-message", f"'code' must be one of {allowed}", _id(obj))
    return Reject(id=_call_id(obj), code=code)


def _hold(obj: dict[str, Any]) -> Hold:
    return Hold(id=_call_id(obj), on=True)


def _unhold(obj: dict[str, Any]) -> Hold:
    return Hold(id=_call_id(obj), on=False)


def _transfer(obj: dict[str, Any]) -> Transfer:
    to = _required(obj, "to", limit=256)
    return Transfer(id=_call_id(obj), to=to.strip())


_PARSERS: dict[str, Callable[[dict[str, Any]], ClientMessage]] = {
    "hello": _hello,
    "call": _call,
    "hangup": _hangup,
    "candidate": _candidate_message,
    "dtmf": _dtmf,
    "accept": _accept,
    "reject": _reject,
    "hold": _hold,
    "unhold": _unhold,
    "transfer": _transfer,
}
