"""RTP port allocation from a configured range: even RTP ports, RTCP on the next one."""

from __future__ import annotations

import random


class PortsExhausted(Exception):
    """Every pair in the range is in use."""


class PortAllocator:
    def __init__(self, low: int, high: int) -> None:
        if low < 1024 or high > 65535 or high - low < 2:
            raise ValueError(f"bad RTP port range {low}-{high}")
        first = low + (low % 2)
        self._free = list(range(first, high - 1, 2))
        # Random order: a port just released is not handed out again at once, so late
        # packets of the old call do not land in the new one.
        random.shuffle(self._free)
        self._used: set[int] = set()

    @property
    def in_use(self) -> int:
        return len(self._used)

    def take(self) -> int:
        if not self._free:
            raise PortsExhausted("no free RTP port pair")
        port = self._free.pop(0)
        self._used.add(port)
        return port

    def release(self, port: int) -> None:
        if port in self._used:
            self._used.remove(port)
            self._free.append(port)
