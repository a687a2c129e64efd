"""Security events: one log line each, in a stable format fail2ban can match, and counters
for /metrics.

Every refused sign-in, lockout, dialling-policy refusal, untrusted INVITE and rate-limit
block goes through `SecurityEvents.record`, so the format lives in one place:

    SECURITY event=auth-failed src=203.0.113.7 user="alice" detail="bad password"

`src` is always the peer's IP address (fail2ban's `<HOST>`), or `-` when there is none
(a call refused by policy comes from a signed-in page whose address is known; a cluster
message may not have one). Values are quoted and stripped of quotes and control characters,
so a hostile user name cannot forge a second event on the same line.
"""

from __future__ import annotations

import logging
import re
import time
from collections import Counter
from enum import StrEnum

log = logging.getLogger("gateway.security")


class SecurityEvent(StrEnum):
    AUTH_FAILED = "auth-failed"  # a hello with a wrong password or token
    LOCKOUT = "lockout"  # a user or source address locked out after failures
    ORIGIN_REFUSED = "origin-refused"  # a WebSocket upgrade from a page of another origin
    SOCKET_LIMIT = "socket-limit"  # too many WebSockets from one address
    POLICY_REFUSED = "policy-refused"  # a call the dialling policy does not allow
    CALL_LIMIT = "call-limit"  # concurrent-call or calls-per-minute cap reached
    UNTRUSTED_INVITE = "untrusted-invite"  # an INVITE from a source that is not trusted
    RATE_LIMITED = "rate-limited"  # a SIP source blocked by the per-address rate limit
    BAD_MESSAGE = "bad-message"  # malformed SIP or WebSocket input
    CREDENTIALS_WITHHELD = "credentials-withheld"  # a challenge from a host not the account's


# Characters that could break the line apart or close a quoted value early.
_UNSAFE = re.compile(r'[\x00-\x1f\x7f"\\]')
# Repeated events of one kind from one source are logged at most this often (seconds): a
# flood must not become a flood of log lines, but fail2ban must still see every source.
LOG_INTERVAL = 1.0
_MAX_TRACKED = 4096


def _clean(value: object, limit: int = 120) -> str:
    return _UNSAFE.sub("?", str(value))[:limit]


class SecurityEvents:
    """Counts every event; logs it unless the same (event, source) was logged within
    LOG_INTERVAL, in which case the line says how many were suppressed meanwhile."""

    def __init__(self) -> None:
        self.counts: Counter[SecurityEvent] = Counter()
        self._last: dict[tuple[SecurityEvent, str], float] = {}
        self._suppressed: Counter[tuple[SecurityEvent, str]] = Counter()
        self._now = time.monotonic

    def record(
        self,
        event: SecurityEvent,
        src: str | None,
        *,
        user: str | None = None,
        detail: str | None = None,
    ) -> None:
        self.counts[event] += 1
        source = _clean(src or "-", 64)
        key = (event, source)
        now = self._now()
        last = self._last.get(key)
        if last is not None and now - last < LOG_INTERVAL:
            self._suppressed[key] += 1
            return
        if len(self._last) >= _MAX_TRACKED:
            # Bounded memory under a spray from many addresses: forget the oldest entries.
            for old in sorted(self._last, key=self._last.__getitem__)[: _MAX_TRACKED // 2]:
                self._last.pop(old, None)
                self._suppressed.pop(old, None)
        self._last[key] = now
        line = f"SECURITY event={event.value} src={source}"
        if user is not None:
            line += f' user="{_clean(user)}"'
        if detail is not None:
            line += f' detail="{_clean(detail, 200)}"'
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            line += f" suppressed={suppressed}"
        log.warning("%s", line)

    def metrics_lines(self) -> list[str]:
        lines = ["# TYPE sipgw_security_events_total counter"]
        for event in SecurityEvent:
            lines.append(
                f'sipgw_security_events_total{{event="{event.value}"}} {self.counts[event]}'
            )
        return lines
