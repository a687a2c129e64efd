"""`sipgw run` as a subprocess, the way a user starts it, on free loopback ports."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from tests.support.ports import free_tcp_udp_port as free_tcp_port

READY = re.compile(rb"sipgw ready: open (\S+)")


@dataclass
class SipgwProcess:
    process: asyncio.subprocess.Process
    url: str
    output: bytearray

    def log(self) -> str:
        return self.output.decode(errors="replace")


@contextlib.asynccontextmanager
async def sipgw_run(
    args: Sequence[str] = (), *, timeout: float = 20.0
) -> AsyncIterator[SipgwProcess]:
    http_port = free_tcp_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli",
        "run",
        "--http-port",
        str(http_port),
        "--sip-port",
        "0",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    output = bytearray()
    url = ""
    try:
        async with asyncio.timeout(timeout):
            while not url:
                line = await process.stdout.readline()
                if not line:
                    raise RuntimeError(f"sipgw exited at start:\n{output.decode()}")
                output += line
                match = READY.search(line)
                if match:
                    url = match.group(1).decode()
    except BaseException:
        process.kill()
        await process.wait()
        raise

    async def drain() -> None:
        assert process.stdout is not None
        while line := await process.stdout.readline():
            output.extend(line)

    drainer = asyncio.create_task(drain())
    running = SipgwProcess(process, url, output)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                process.kill()
                await process.wait()
        await drainer
