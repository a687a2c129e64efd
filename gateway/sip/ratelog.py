"""A log that a flood cannot turn into a flood of lines.

Bad peer input is logged one line per message, but a peer can send thousands a second:
past `burst` lines in one `interval` the rest are only counted, and the next line that gets
through says how many were left out, so nothing is hidden and the log stays small.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        *,
        burst: int = 10,
        interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._burst = burst
        self._interval = interval
        self._clock = clock
        self._window_start = -interval
        self._in_window = 0
        self.suppressed = 0

    def warning(self, message: str, *args: object) -> None:
        now = self._clock()
        if now - self._window_start >= self._interval:
            self._window_start = now
            self._in_window = 0
        if self._in_window >= self._burst:
            self.suppressed += 1
            return
        self._in_window += 1
        if self.suppressed:
            message += " (%d similar line(s) suppressed)"
            args = (*args, self.suppressed)
            self.suppressed = 0
        self._log.warning(message, *args)
