"""Values shared by every kind of call and by the layers that start them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from sipmessage import URI, Response

from gateway.config import Trunk
from gateway.sip.transport import Peer

if TYPE_CHECKING:
    from gateway.calls.call import Call
    from gateway.sip.ua import Redirect


class CallError(Exception):
    """A page request that cannot be done now; `code` is the protocol's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Route:
    """Where the call goes: the Request-URI and the next hop, plus the account."""

    target: URI
    peer: Peer
    trunk: Trunk | None


class Redirector(Protocol):
    """The gateway's side of a 3xx or REFER: routes the target through the dial plan and
    the policy of the call's user (None: refused), and hears of withheld credentials."""

    def redirect(self, call: Call, uri: URI, source: Peer) -> Redirect | None: ...

    def withheld(self, call: Call, peer: Peer, response: Response) -> None: ...
