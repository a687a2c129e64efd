"""How long the gateway itself takes in a call set-up, for /healthz and /metrics."""

from __future__ import annotations

import math
from collections import deque
from typing import Any

# Enough for stable percentiles, small enough to sort on every /healthz.
WINDOW = 1000


class SetupTimes:
    """The last WINDOW samples of each named interval, in seconds."""

    def __init__(self) -> None:
        self._samples: dict[str, deque[float]] = {}

    def record(self, name: str, seconds: float) -> None:
        self._samples.setdefault(name, deque(maxlen=WINDOW)).append(seconds)

    def summary(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name, samples in self._samples.items():
            ordered = sorted(samples)
            out[name] = {
                "count": len(ordered),
                "p50_ms": round(1000 * _percentile(ordered, 50), 2),
                "p99_ms": round(1000 * _percentile(ordered, 99), 2),
            }
        return out


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]
