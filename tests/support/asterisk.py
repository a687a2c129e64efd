"""A real Asterisk running asterisk-config/ on loopback, for tests (when `asterisk` is on PATH).

    async with Asterisk() as pbx:                     # SIP on 127.0.0.1:pbx.port (UDP)
        await pbx.rx("pjsip show contacts")           # any CLI command, its output
        await pbx.wait_for_log(r"sipgw-dtmf: (\\d+)")  # a line of messages.log
        pbx.log()                                     # messages.log and stdout so far

Each run copies asterisk-config/ into a temporary directory and rewrites only what must
differ between runs: the SIP port (pjsip.conf `bind=127.0.0.1:5060`), the RTP range
(rtp.conf `rtpstart`/`rtpend`), sipgw's address in mode (b) (pjsip.conf `127.0.0.1:5070`,
when `sipgw_port` is given), the endpoint the dialplan rings browsers through
(extensions.conf `SIPGW=`), and the [directories] of asterisk.conf (all under the
temporary directory, except the modules and data, which stay at the built-in defaults of
the binary). A placeholder missing from the config is an error, not a silent no-op.

Facts that shaped the code:
- `asterisk -f -C CONF` stays in the foreground without a console (-c would read stdin).
  It is started in a new session so that stopping its process group stops everything.
- `asterisk -C CONF -rx CMD` talks to the running one through astrundir/asterisk.ctl;
  it fails until that socket exists. `core waitfullybooted` returns once start-up is done.
- A SIP port taken by someone else does not stop Asterisk (res_pjsip only logs it), so
  readiness also checks /proc/net/udp, and start is retried on a new port.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.support.ports import free_udp_port, port_is_free
from tests.support.process import ManagedServer, end_process_group

logger = logging.getLogger(__name__)

ASTERISK = "asterisk"
CONFIG_DIR = Path(__file__).resolve().parent.parent.parent / "asterisk-config"
HOST = "127.0.0.1"
# Placeholders of the committed files (see asterisk-config/README.md).
SIP_PLACEHOLDER = "127.0.0.1:5060"
SIPGW_PLACEHOLDER = "127.0.0.1:5070"
RTP_BLOCK = 200  # ports per run: 100 calls, far more than a test makes
# A locally administered MAC: the test instance's EID (see render).
ENTITY_ID = "02:00:00:00:5e:01"
_READY_TIMEOUT = 30.0
_START_ATTEMPTS = 3
_RX_TIMEOUT = 10.0


class AsteriskError(Exception):
    """Asterisk could not be started or asked, or its configuration is unusable."""


def asterisk_available() -> bool:
    return shutil.which(ASTERISK) is not None


SKIP_REASON = (
    "asterisk not on PATH (Asterisk 20+ with res_pjsip; not packaged for Debian 12; "
    "see asterisk-config/README.md)"
)


def asterisk_version() -> str:
    """`asterisk -V`, e.g. "Asterisk 22.10.1"; "" when there is none."""
    binary = shutil.which(ASTERISK)
    if binary is None:
        return ""
    try:
        done = subprocess.run(
            [binary, "-V"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip()


def _replace(text: str, pattern: str, replacement: str, file: str) -> str:
    new, count = re.subn(pattern, replacement, text, flags=re.MULTILINE)
    if count == 0:
        raise AsteriskError(f"{file}: placeholder /{pattern}/ not found")
    return new


def _udp_listening(host: str, port: int) -> bool:
    """Whether a UDP socket is bound to host:port (/proc/net/udp, IPv4)."""
    packed = "".join(f"{int(part):02X}" for part in reversed(host.split(".")))
    wanted = f"{packed}:{port:04X}"
    try:
        lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(line.split()[1] == wanted for line in lines if len(line.split()) > 1)


def _free_rtp_block(host: str) -> tuple[int, int]:
    """An even-based block of RTP_BLOCK UDP ports, all free right now, above sipgw's range.

    Asterisk picks a random port in its range and tries another one if that is taken, so a
    port taken later only costs it a retry."""
    for _ in range(50):
        start = random.randrange(40000, 60000 - RTP_BLOCK, 2)
        if all(port_is_free(p, host, tcp=False) for p in range(start, start + RTP_BLOCK)):
            return start, start + RTP_BLOCK - 1
    raise AsteriskError(f"no free block of {RTP_BLOCK} UDP ports on {host}")


class Asterisk(ManagedServer):
    """One Asterisk process with a copy of asterisk-config/ in a temporary directory."""

    def __init__(
        self,
        config_dir: Path = CONFIG_DIR,
        *,
        sipgw_port: int | None = None,
        sipgw_endpoint: str = "sipgw",
        port: int | None = None,
        host: str = HOST,
    ) -> None:
        self.config_dir = config_dir
        # A SIP port chosen by the caller (who had to tell sipgw first); None: a free one,
        # and a new one if it is taken before Asterisk binds it.
        self._fixed_port = port
        # Mode (b): where sipgw listens (pjsip.conf contact and identify match of sipgw-ip).
        self.sipgw_port = sipgw_port
        # The endpoint extensions.conf dials browser users through: sipgw or sipgw-ip.
        self.sipgw_endpoint = sipgw_endpoint
        self.host = host
        self.port = 0
        self.rtp_range = (0, 0)
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._kept_log = ""

    # -- public API ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def root(self) -> Path:
        if self._tmp is None:
            raise AsteriskError("Asterisk is not started")
        return Path(self._tmp.name)

    @property
    def conf(self) -> Path:
        """The asterisk.conf of this run (what -C gets)."""
        return self.root / "etc" / "asterisk.conf"

    def uri(self, user: str | None = None) -> str:
        return f"sip:{user + '@' if user else ''}{self.host}:{self.port}"

    def log(self) -> str:
        """messages.log (logger.conf) followed by what the process printed."""
        if self._tmp is None:
            return self._kept_log
        parts = []
        for path in (self.root / "log" / "messages.log", self.root / "asterisk.out"):
            with contextlib.suppress(OSError):
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)

    async def wait_for_log(
        self, pattern: str, *, count: int = 1, timeout: float = 10.0
    ) -> re.Match[str]:
        """The `count`-th match of `pattern` in the log, waiting up to `timeout` s for it."""
        regex = re.compile(pattern)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    found = list(regex.finditer(self.log()))
                    if len(found) >= count:
                        return found[count - 1]
                    if not self.running:
                        raise AsteriskError(f"Asterisk exited; log:\n{self.log()[-3000:]}")
                    await asyncio.sleep(0.05)
        except TimeoutError:
            raise AsteriskError(
                f"/{pattern}/ not {count} time(s) in the Asterisk log within {timeout} s:\n"
                f"{self.log()[-3000:]}"
            ) from None

    async def rx(self, command: str, *, timeout: float = _RX_TIMEOUT) -> str:
        """Run one CLI command in the running Asterisk (`asterisk -rx`); its output."""
        if not self.running:
            raise AsteriskError(f"Asterisk is not running; cannot run {command!r}")
        code, output = await self._remote(command, timeout)
        # An unknown command (its module not loaded) still exits 0.
        if code != 0 or output.startswith("No such command"):
            raise AsteriskError(f"asterisk -rx {command!r} failed ({code}): {output}")
        return output

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not asterisk_available():
            raise AsteriskError(SKIP_REASON)
        # Short prefix: astrundir/asterisk.ctl must fit in a Unix socket path (108 bytes).
        self._tmp = tempfile.TemporaryDirectory(prefix="ast-")
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    await self._start_once()
                    return
                except _PortTaken:
                    if attempt == _START_ATTEMPTS or self._fixed_port is not None:
                        raise AsteriskError(
                            f"Asterisk could not bind a SIP port in {attempt} attempts:\n"
                            f"{self.log()[-3000:]}"
                        ) from None
                    logger.info("Asterisk did not bind port %d, retrying", self.port)
                    await self._stop_process()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop Asterisk (`core stop now`, then signals); its log stays readable."""
        await self._stop_process()
        if self._tmp is not None:
            self._kept_log = self.log()
            self._tmp.cleanup()
            self._tmp = None

    # -- configuration ------------------------------------------------------------------

    def render(self, etc: Path) -> None:
        """Copy the configuration into `etc`, with this run's ports and directories."""
        shutil.copytree(self.config_dir, etc, dirs_exist_ok=True)
        pjsip = (etc / "pjsip.conf").read_text()
        pjsip = _replace(
            pjsip,
            rf"^(bind\s*=\s*){re.escape(SIP_PLACEHOLDER)}\s*$",
            rf"\g<1>{self.host}:{self.port}",
            "pjsip.conf",
        )
        if self.sipgw_port is not None:
            pjsip = _replace(
                pjsip,
                re.escape(SIPGW_PLACEHOLDER),
                f"{self.host}:{self.sipgw_port}",
                "pjsip.conf",
            )
        (etc / "pjsip.conf").write_text(pjsip)

        rtp = (etc / "rtp.conf").read_text()
        rtp = _replace(rtp, r"^rtpstart\s*=.*$", f"rtpstart={self.rtp_range[0]}", "rtp.conf")
        rtp = _replace(rtp, r"^rtpend\s*=.*$", f"rtpend={self.rtp_range[1]}", "rtp.conf")
        (etc / "rtp.conf").write_text(rtp)

        dialplan = (etc / "extensions.conf").read_text()
        dialplan = _replace(
            dialplan, r"^SIPGW\s*=.*$", f"SIPGW={self.sipgw_endpoint}", "extensions.conf"
        )
        (etc / "extensions.conf").write_text(dialplan)

        root = etc.parent
        directories = {
            "astetcdir": etc,
            "astvarlibdir": root / "lib",
            "astdbdir": root / "lib",
            "astkeydir": root / "lib",
            "astagidir": root / "lib" / "agi-bin",
            "astspooldir": root / "spool",
            "astrundir": root / "run",
            "astlogdir": root / "log",
        }
        for path in directories.values():
            path.mkdir(parents=True, exist_ok=True)
        section = "[directories]\n" + "".join(
            f"{key} => {path}\n" for key, path in directories.items()
        )
        conf = (etc / "asterisk.conf").read_text()
        # The whole [directories] section (up to the next one) is replaced.
        conf = _replace(
            conf, r"^\[directories\][^\n]*\n(?:(?!\[)[^\n]*\n)*", section + "\n", "asterisk.conf"
        )
        # Without it, Asterisk and every `asterisk -rx` derive one from an Ethernet
        # interface, and in a loopback-only network namespace print a warning to stdout.
        conf = _replace(
            conf, r"^\[options\][^\n]*\n", rf"\g<0>entityid={ENTITY_ID}\n", "asterisk.conf"
        )
        (etc / "asterisk.conf").write_text(conf)

    # -- internals ----------------------------------------------------------------------

    async def _start_once(self) -> None:
        root = self.root
        self.port = self._fixed_port or free_udp_port(self.host)
        self.rtp_range = _free_rtp_block(self.host)
        shutil.rmtree(root / "etc", ignore_errors=True)
        self.render(root / "etc")
        command = [ASTERISK, "-f", "-n", "-C", str(self.conf)]
        logger.debug("starting %s", " ".join(command))
        with (root / "asterisk.out").open("ab") as output:
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=root,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                while True:
                    if self._proc.returncode is not None:
                        self.returncode = self._proc.returncode
                        raise AsteriskError(f"asterisk exited at start:\n{self.log()[-3000:]}")
                    code, _ = await self._remote("core waitfullybooted", _READY_TIMEOUT)
                    if code == 0:
                        break
                    await asyncio.sleep(0.1)
                # Transports are set up during boot: bound now, or never.
                if not _udp_listening(self.host, self.port):
                    raise _PortTaken
        except TimeoutError:
            raise AsteriskError(
                f"asterisk not fully booted within {_READY_TIMEOUT} s:\n{self.log()[-3000:]}"
            ) from None

    async def _remote(self, command: str, timeout: float) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            ASTERISK,
            "-C",
            str(self.conf),
            "-rx",
            command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            async with asyncio.timeout(timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise AsteriskError(f"asterisk -rx {command!r} took over {timeout} s") from None
        assert proc.returncode is not None
        return proc.returncode, output.decode(errors="replace")

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.returncode is None:
            with contextlib.suppress(AsteriskError):
                await self._remote("core stop now", 5.0)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 5.0)
        # Our own session: the group holds Asterisk and anything it started.
        self.returncode = await end_process_group(proc)


class _PortTaken(Exception):
    """The SIP port was taken between choosing it and Asterisk binding it."""
