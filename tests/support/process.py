"""What every test server driver shares: async-with around start/stop, and ending a
process group (the server and whatever it forked) politely, then firmly."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from types import TracebackType
from typing import Self


class ManagedServer:
    """`async with Server(...) as server:` calls start() and, whatever happens, stop()."""

    async def start(self) -> None:
        raise NotImplementedError

    async def stop(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def end_process_group(
    proc: asyncio.subprocess.Process, *, term_grace: float = 5.0, kill_grace: float = 5.0
) -> int | None:
    """SIGTERM the process's group (started with start_new_session), then SIGKILL; returns
    the exit code. A last SIGKILL catches children left behind by a parent that died first."""
    for sig, grace in ((signal.SIGTERM, term_grace), (signal.SIGKILL, kill_grace)):
        if proc.returncode is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), grace)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode
