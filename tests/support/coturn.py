"""coturn (Debian package coturn) as a TURN server on 127.0.0.1 for tests, with the TURN
REST API shared secret (`use-auth-secret`) that sipgw hands out credentials for."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.support.ports import free_udp_port, port_is_free

REALM = "sipgw.test"


def coturn_available() -> bool:
    return shutil.which("turnserver") is not None


class Coturn:
    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.port = 0
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._log = ""

    @property
    def url(self) -> str:
        return f"turn:127.0.0.1:{self.port}?transport=udp"

    def log(self) -> str:
        if self._tmp is not None:
            path = Path(self._tmp.name) / "turn.log"
            if path.exists():
                return path.read_text(errors="replace")
        return self._log

    async def __aenter__(self) -> Self:
        self._tmp = tempfile.TemporaryDirectory(prefix="coturn-")
        self.port = free_udp_port()
        relay = free_udp_port()
        log = Path(self._tmp.name) / "turn.log"
        self._proc = await asyncio.create_subprocess_exec(
            "turnserver",
            "-n",
            "--listening-ip=127.0.0.1",
            "--relay-ip=127.0.0.1",
            f"--listening-port={self.port}",
            # A small relay range starting at a free port; coturn skips taken ones.
            f"--min-port={relay}",
            f"--max-port={min(relay + 200, 65535)}",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            f"--realm={REALM}",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--no-tcp-relay",
            # Test peers live on loopback, which coturn refuses to relay to by default.
            "--allow-loopback-peers",
            "--fingerprint",
            "--simple-log",
            f"--log-file={log}",
            f"--pidfile={Path(self._tmp.name) / 'turn.pid'}",
            "--verbose",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        async with asyncio.timeout(10):
            while port_is_free(self.port, tcp=False):
                if self._proc.returncode is not None:
                    raise RuntimeError(f"turnserver exited at start:\n{self.log()}")
                await asyncio.sleep(0.05)
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            try:
                await asyncio.wait_for(self._proc.wait(), 5)
            except TimeoutError:
                self._proc.kill()
                await self._proc.wait()
        self._log = self.log()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
