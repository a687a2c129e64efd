"""What happens to a call (events) and what the call core asks for in return (effects).

Events are named after what happened, on the page, on the SIP side or on a timer; effects
after what to do. Both are plain values: the core (machine.py) maps one event to a list of
effects without awaiting anything, the driver (call.py and its variants) carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from gateway.calls.page import PageMessage
from sdp import Direction


@dataclass(frozen=True)
class CallEnded:
    code: int
    reason: str
    by: str  # "local" (the browser), "remote" (the SIP side) or "gateway"


class Event:
    """Something that happened to a call."""


# --- set-up ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Dialled(Event):
    """Outbound: the INVITE is on its way."""


@dataclass(frozen=True)
class PagesRung(Event):
    """Inbound or browser to browser: the callee's pages were shown the call."""


@dataclass(frozen=True)
class ProvisionalReceived(Event):
    code: int


@dataclass(frozen=True)
class EarlyMediaReady(Event):
    """A 18x with SDP was bridged; `sdp` answers the page's offer."""

    sdp: str


@dataclass(frozen=True)
class AnsweredReceived(Event):
    """A 200 to our INVITE, its media bridged; `sdp` answers the page's offer."""

    sdp: str


@dataclass(frozen=True)
class InviteFailed(Event):
    code: int
    reason: str


@dataclass(frozen=True)
class PageAccept(Event):
    """A page answered a call ringing on it."""

    sdp: str = ""


@dataclass(frozen=True)
class AckReceived(Event):
    """Inbound: the caller confirmed our 200 and media is bridged."""


@dataclass(frozen=True)
class PageReject(Event):
    code: int


@dataclass(frozen=True)
class PagesGone(Event):
    """The last page the call rang on went away."""

    callee: str = ""


@dataclass(frozen=True)
class CalleeHangup(Event):
    """Browser to browser: a page of the callee hung up (the caller's is `PageHangup`)."""


@dataclass(frozen=True)
class SetupFailed(Event):
    """The gateway could not set the call up (ports, unusable SDP, media error)."""

    ended: CallEnded


# --- ends -----------------------------------------------------------------------------


@dataclass(frozen=True)
class PageHangup(Event):
    pass


@dataclass(frozen=True)
class CancelReceived(Event):
    pass


@dataclass(frozen=True)
class ByeReceived(Event):
    pass


@dataclass(frozen=True)
class NoAnswerTimeout(Event):
    """Outbound: nobody answered within no_answer_timeout (the gateway's Timer B)."""


@dataclass(frozen=True)
class RingTimeout(Event):
    """Inbound or browser to browser: no page answered within ring_timeout."""


@dataclass(frozen=True)
class AckTimeout(Event):
    """A 2xx of ours (to the INVITE or a re-INVITE) got no ACK in 64*T1."""


@dataclass(frozen=True)
class RtpTimeout(Event):
    pass


@dataclass(frozen=True)
class IceFailed(Event):
    pass


@dataclass(frozen=True)
class SessionExpired(Event):
    pass


@dataclass(frozen=True)
class SessionRefreshFailed(Event):
    code: int


@dataclass(frozen=True)
class TransferDone(Event):
    """Our REFER succeeded: the far end reached the target, we leave."""


@dataclass(frozen=True)
class Shutdown(Event):
    reason: str = "Gateway shutting down"


@dataclass(frozen=True)
class Released(Event):
    """The driver sent the last SIP and released media: the call is over."""


# --- effects --------------------------------------------------------------------------


class Effect:
    """Something the driver must do for the core."""


class Audience(StrEnum):
    PAGES = "pages"  # every page the call is on (the caller's for browser to browser)
    CALLEES = "callees"  # browser to browser: the callee's pages


@dataclass(frozen=True)
class TellPage(Effect):
    message: PageMessage
    to: Audience = Audience.PAGES


@dataclass(frozen=True)
class StopRingingOthers(Effect):
    """A page answered: the callee's other pages stop ringing."""


@dataclass(frozen=True)
class SendResponse(Effect):
    """A final response to the INVITE that is still pending (inbound)."""

    code: int
    reason: str | None = None


@dataclass(frozen=True)
class SendRinging(Effect):
    code: int = 180


@dataclass(frozen=True)
class SendCancel(Effect):
    pass


@dataclass(frozen=True)
class SendBye(Effect):
    pass


@dataclass(frozen=True)
class SendAnswer(Effect):
    """Inbound: the 200 with the SIP side of the page's answer."""

    sdp: str


@dataclass(frozen=True)
class SendReinvite(Effect):
    direction: Direction | None  # of the offer; None: as before (a session refresh)


@dataclass(frozen=True)
class SendRefer(Effect):
    target: str


@dataclass(frozen=True)
class OpenMedia(Effect):
    """Start the RTP watchdog: the call carries audio now."""


@dataclass(frozen=True)
class CloseMedia(Effect):
    pass


@dataclass(frozen=True)
class StartTimer(Effect):
    name: str
    seconds: float


@dataclass(frozen=True)
class CancelTimer(Effect):
    name: str


@dataclass(frozen=True)
class CancelAllTimers(Effect):
    pass


@dataclass(frozen=True)
class Release(Effect):
    """Resolve `ended`, let the pages forget the call, log its end."""

    ended: CallEnded
