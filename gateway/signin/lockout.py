"""Failed sign-ins counted per user and per source address, and temporary lockouts.

Like fail2ban's findtime/maxretry/bantime with bantime.increment: `failures` failures
within `window` seconds lock the key for `base` seconds, doubling at each further lockout
(up to `maximum`) until the key has stayed clean for a while. Memory is bounded: at most
`capacity` keys are tracked; expired ones go first, then the least recently failed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

# Keys tracked at most: a spray of made-up user names or addresses cannot grow memory past
# this (each entry holds at most `failures` timestamps).
CAPACITY = 10_000


@dataclass
class _Entry:
    failures: deque[float] = field(default_factory=deque)
    locked_until: float = 0.0
    lockouts: int = 0
    last: float = 0.0


class Lockout:
    def __init__(
        self,
        *,
        failures: int,
        window: float,
        base: float,
        maximum: float,
        capacity: int = CAPACITY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.window = window
        self.base = base
        self.maximum = maximum
        self.capacity = capacity
        self._clock = clock
        self._entries: dict[str, _Entry] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def locked(self, key: str) -> bool:
        entry = self._entries.get(key)
        return entry is not None and self._clock() < entry.locked_until

    def fail(self, key: str) -> float | None:
        """Count a failure; returns the lockout's length when this failure starts one."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            self._make_room(now)
            entry = self._entries[key] = _Entry()
        elif self._forgotten(entry, now):
            entry.lockouts = 0
        entry.last = now
        while entry.failures and entry.failures[0] <= now - self.window:
            entry.failures.popleft()
        entry.failures.append(now)
        if len(entry.failures) < self.failures or now < entry.locked_until:
            return None
        entry.failures.clear()
        length: float = min(self.base * float(2**entry.lockouts), self.maximum)
        entry.lockouts += 1
        entry.locked_until = now + length
        return length

    def succeed(self, key: str) -> None:
        entry = self._entries.get(key)
        if entry is not None and not self.locked(key):
            del self._entries[key]

    def _forgotten(self, entry: _Entry, now: float) -> bool:
        """Clean for a whole maximum lockout after the last one ended: start afresh."""
        return now >= max(entry.locked_until, entry.last + self.window) + self.maximum

    def _expired(self, entry: _Entry, now: float) -> bool:
        return (
            now >= entry.locked_until
            and now - entry.last >= self.window
            and (entry.lockouts == 0 or self._forgotten(entry, now))
        )

    def _make_room(self, now: float) -> None:
        if len(self._entries) < self.capacity:
            return
        for key in [k for k, e in self._entries.items() if self._expired(e, now)]:
            del self._entries[key]
        if len(self._entries) >= self.capacity:
            # Still full of live entries: forget the oldest half that are not locked now,
            # then (if all are locked) the oldest half outright.
            by_age = sorted(self._entries, key=lambda k: self._entries[k].last)
            idle = [k for k in by_age if now >= self._entries[k].locked_until]
            for key in (idle or by_age)[: max(1, self.capacity // 2)]:
                del self._entries[key]
