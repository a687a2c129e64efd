"""A call's slow page requests (hold, transfer, DTMF), run one after the other in a task
of their own, so the socket's read loop goes straight on to the page's next message.

A request that waits on the far end (a re-INVITE answered 100 and nothing more, a REFER)
must never hold up the next one the page sends, least of all `hangup`: the session
abandons the call's queue first (the request under way is cancelled, which CANCELs a
pending re-INVITE), then hangs up.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]
OnError = Callable[[Exception], None]


class CallQueue:
    def __init__(self, name: str, on_error: OnError) -> None:
        self.name = name
        self._on_error = on_error
        self._jobs: deque[Job] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping: set[asyncio.Task[None]] = set()  # cancelled, until they finish

    @property
    def busy(self) -> bool:
        return self._task is not None and not self._task.done()

    def put(self, job: Job) -> None:
        """Run `job` after those already queued; its exceptions go to `on_error`."""
        self._jobs.append(job)
        if not self.busy:
            self._task = asyncio.create_task(self._run(), name=f"call-requests-{self.name}")

    def abandon(self) -> None:
        """Drop what is queued and cancel what runs; returns at once."""
        self._jobs.clear()
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            self._stopping.add(task)
            task.add_done_callback(self._stopping.discard)

    async def _run(self) -> None:
        while self._jobs:
            job = self._jobs.popleft()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._on_error(exc)
