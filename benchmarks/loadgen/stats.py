"""Counters one worker keeps and the parent merges: per call, and a latency histogram."""

from __future__ import annotations

from array import array
from dataclasses import asdict, dataclass, field
from typing import Any

BIN_US = 100  # histogram resolution
BINS = 20000  # 0 .. 2 s; the last bin holds everything slower
LATE_NS = 40_000_000  # one-way latency above which a packet counts as late


@dataclass
class CallStats:
    index: int
    setup_ms: float | None = None  # `call` sent -> answer received
    connect_ms: float | None = None  # answer received -> ICE+DTLS connected
    sent: int = 0  # packets sent inside the measurement window
    received: int = 0  # of those, packets that came back
    late: int = 0  # of those, one-way latency > 40 ms
    decrypt_errors: int = 0
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Histogram:
    counts: array[int] = field(default_factory=lambda: array("L", bytes(8 * BINS)))

    def add_ns(self, value_ns: int) -> None:
        index = value_ns // (BIN_US * 1000)
        self.counts[index if 0 <= index < BINS else (BINS - 1 if index > 0 else 0)] += 1

    def merge(self, other: list[int]) -> None:
        for index, count in enumerate(other):
            if count:
                self.counts[index] += count

    def total(self) -> int:
        return sum(self.counts)

    def percentile_ms(self, q: float) -> float | None:
        total = self.total()
        if total == 0:
            return None
        rank = q / 100 * total
        running = 0
        for index, count in enumerate(self.counts):
            running += count
            if running >= rank:
                return (index + 0.5) * BIN_US / 1000
        return BINS * BIN_US / 1000

    def sparse(self) -> dict[str, int]:
        return {str(i): c for i, c in enumerate(self.counts) if c}
