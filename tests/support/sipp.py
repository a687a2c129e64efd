"""sipp (Debian sip-tester 3.6.1) as the far SIP party of a test, on 127.0.0.1.

    async with SippUas("uas_busy") as uas:          # a scenario of tests/sipp/, or a Path
        await gateway_dials(uas.uri)                 # sip:service@127.0.0.1:PORT
        assert await uas.wait(timeout=10) == 0       # 0: every call ran to the end
    assert "SIP/2.0 486 Busy Here" in uas.messages()

`SippUac` is the mirror: sipp places calls to a target (`-s`, `-r`, `-m`).

Scenario files may declare, in a comment, what the runner has to pass for them:
`default-key NAME=VALUE` lines give a `-key` default (sipp 3.6.1 refuses a scenario that
uses `[NAME]` when no -key NAME was given, so every key needs one), and a
`sipp-args ARGS` line gives command-line options the scenario depends on.

Facts about this sipp build that shaped the code:
- Every instance needs its own `-p`, `-mp` and `-cp`: the control socket defaults to
  UDP 8888, and a taken media port is silently replaced by another one.
- `-rtp_echo` echoes UDP on the media port and on media port + 2 for the whole run.
- `-timeout 30s` ends sipp after 30 s; with `-timeout_error` that is a fatal error (exit
  code 255, "timed out after" in errors()). sipp once hung here, so it also runs under
  coreutils `timeout` (exit code 124 when that fires).
- Exit codes: 0 every call succeeded, 1 at least one failed, 97 internal command, 99 no
  call processed, 255 fatal error (or the global time-out), 254 a socket could not be bound.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from tests.support.ports import free_tcp_udp_port, free_udp_port, port_is_free
from tests.support.process import ManagedServer, end_process_group

logger = logging.getLogger(__name__)

SIPP = "sipp"
SCENARIO_DIR = Path(__file__).resolve().parent.parent / "sipp"
SELFTEST_DIR = SCENARIO_DIR / "selftest"
HOST = "127.0.0.1"
# coreutils `timeout` gets this much longer than sipp's own -timeout, so sipp normally ends
# by itself and `timeout` only catches a hang.
_HANG_MARGIN = 5.0
_READY_TIMEOUT = 5.0
_START_ATTEMPTS = 3

Transport = Literal["u1", "t1"]

_DEFAULT_KEY = re.compile(r"^\s*default-key\s+([A-Za-z_][A-Za-z0-9_]*)=(\S*)\s*$", re.MULTILINE)
_SIPP_ARGS = re.compile(r"^\s*sipp-args\s+(.+?)\s*$", re.MULTILINE)


class SippError(Exception):
    """sipp could not be started, or did not end in time."""


def sipp_available() -> bool:
    return shutil.which(SIPP) is not None and shutil.which("timeout") is not None


def scenario_path(scenario: Path | str) -> Path:
    """`scenario` itself if it is a file, else tests/sipp/NAME(.xml) or selftest/NAME(.xml)."""
    path = Path(scenario)
    if path.is_file():
        return path.resolve()
    name = path.name if path.suffix == ".xml" else f"{path.name}.xml"
    for directory in (SCENARIO_DIR, SELFTEST_DIR):
        candidate = directory / name
        if candidate.is_file():
            return candidate
    raise SippError(f"no sipp scenario {scenario!r} (looked in {SCENARIO_DIR} and selftest/)")


def scenario_defaults(path: Path) -> tuple[dict[str, str], list[str]]:
    """The `default-key` values and `sipp-args` options a scenario file declares."""
    text = path.read_text(encoding="latin-1")
    keys = dict(_DEFAULT_KEY.findall(text))
    args = [arg for line in _SIPP_ARGS.findall(text) for arg in line.split()]
    return keys, args


def free_media_port(host: str = HOST) -> int:
    """An even UDP port P with P..P+3 free: sipp uses P and P+2 (RTP echo), RTCP the odd ones."""
    for _ in range(200):
        port = free_udp_port(host)
        if (
            port % 2 == 0
            and port < 65532
            and all(port_is_free(p, host, tcp=False) for p in range(port + 1, port + 4))
        ):
            return port
    raise OSError(f"no free block of 4 UDP ports on {host}")


def _bound_ports(kind: Literal["udp", "tcp"], host: str = HOST) -> set[int]:
    """Local ports bound on `host` (IPv4) or 0.0.0.0 (TCP: listening), from /proc/net."""
    packed = "".join(f"{int(part):02X}" for part in reversed(host.split(".")))
    ports: set[int] = set()
    try:
        lines = Path(f"/proc/net/{kind}").read_text().splitlines()[1:]
    except OSError:
        return ports
    for line in lines:
        fields = line.split()
        if len(fields) < 4:
            continue
        address, _, port_hex = fields[1].partition(":")
        # TCP state 0A is LISTEN; UDP sockets have no state worth checking.
        if address in (packed, "00000000") and (kind == "udp" or fields[3] == "0A"):
            ports.add(int(port_hex, 16))
    return ports


class _Sipp(ManagedServer):
    """One sipp process with its logs in a temporary directory; an async context manager."""

    def __init__(
        self,
        scenario: Path | str,
        *,
        host: str,
        sip_port: int,
        media_port: int,
        transport: Transport,
        extra_args: Sequence[str],
        keys: Mapping[str, str] | None,
        timeout: float,
        max_calls: int,
        rtp_echo: bool,
        trace_messages: bool,
    ) -> None:
        if transport not in ("u1", "t1"):
            raise ValueError(f"transport must be 'u1' or 't1', not {transport!r}")
        self.scenario = scenario_path(scenario)
        self.host = host
        self.transport: Transport = transport
        self.extra_args = list(extra_args)
        default_keys, self.scenario_args = scenario_defaults(self.scenario)
        self.keys = {**default_keys, **(keys or {})}
        self.timeout = timeout
        self.max_calls = max_calls
        self.rtp_echo = rtp_echo
        self.trace_messages = trace_messages
        self._requested_sip_port = sip_port
        self._requested_media_port = media_port
        self.port = sip_port
        self.media_port = media_port
        self.control_port = 0
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        # Log contents kept once the temporary directory is gone.
        self._kept: dict[str, str] = {}

    # -- public API -------------------------------------------------------------------

    @property
    def uri(self) -> str:
        """sip:service@HOST:PORT, plus ;transport=tcp when sipp listens on TCP."""
        suffix = ";transport=tcp" if self.transport == "t1" else ""
        return f"sip:service@{self.host}:{self.port}{suffix}"

    @property
    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    # The timeout is part of the call for readability in tests: wait(timeout=10).
    async def wait(self, timeout: float | None = None) -> int:
        """sipp's exit code once it has ended (see the module docstring for the values).

        Raises SippError if it is still running after `timeout` seconds (default: its own
        -timeout plus a margin); it is then left running, and stopped on context exit.
        """
        if self.returncode is not None:
            return self.returncode
        if self._proc is None:
            raise SippError("sipp not started")
        limit = self.timeout + 2 * _HANG_MARGIN if timeout is None else timeout
        try:
            code = await asyncio.wait_for(self._proc.wait(), limit)
        except TimeoutError:
            raise SippError(
                f"sipp ({self.scenario.name}) still running after {limit} s\n{self.summary()}"
            ) from None
        self.returncode = code
        return code

    def messages(self) -> str:
        """The -trace_msg log: every SIP message sent and received, in order."""
        return self._read("messages.log")

    def errors(self) -> str:
        """The -trace_err log: unexpected messages and why calls were aborted."""
        return self._read("errors.log")

    def screen(self) -> str:
        """sipp's final statistics screen (written when it exits)."""
        return self._read("screen.log")

    def output(self) -> str:
        """sipp's stdout and stderr (periodic screens, fatal errors)."""
        return self._read("output.log")

    def received(self, start: str) -> list[str]:
        """Messages sipp received whose first line starts with `start` (e.g. "BYE ")."""
        return _trace_messages(self.messages(), "received", start)

    def sent(self, start: str) -> list[str]:
        """Messages sipp sent whose first line starts with `start` (e.g. "SIP/2.0 200")."""
        return _trace_messages(self.messages(), "sent", start)

    def summary(self) -> str:
        """What to print when a test fails: exit code, error log, end of the output."""
        tail = "\n".join(self.output().splitlines()[-15:])
        return (
            f"sipp {self.scenario.name} exit code {self.returncode}\n"
            f"errors:\n{self.errors()[-3000:]}\noutput:\n{tail}"
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not sipp_available():
            raise SippError("sipp or timeout not on PATH (Debian packages sip-tester, coreutils)")
        self._tmp = tempfile.TemporaryDirectory(prefix="sipp-")
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    await self._start_once()
                    return
                except SippError:
                    await self._stop_process()
                    # A port picked here can be taken by someone else before sipp binds it.
                    fixed = self._requested_sip_port or self._requested_media_port
                    if fixed or attempt == _START_ATTEMPTS:
                        raise
                    logger.info("sipp did not start (attempt %d), retrying", attempt)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop sipp if it still runs; keep its logs readable; remove the temporary files."""
        await self._stop_process()
        if self._tmp is not None:
            for name in ("messages.log", "errors.log", "screen.log", "output.log"):
                self._kept[name] = self._read(name)
            self._tmp.cleanup()
            self._tmp = None

    # -- internals ----------------------------------------------------------------------

    def _args(self) -> list[str]:
        """Arguments specific to the role (target, -s, -r, ...)."""
        return []

    def _ready_ports(self) -> tuple[set[int], set[int]]:
        """The UDP and TCP ports that must be bound before sipp counts as started."""
        return set(), set()

    def _command(self, workdir: Path) -> list[str]:
        command = [
            "timeout",
            "--kill-after=2",
            f"{self.timeout + _HANG_MARGIN:.1f}",
            SIPP,
            *self._args(),
            "-sf",
            str(self.scenario),
            "-t",
            self.transport,
            "-i",
            self.host,
            "-p",
            str(self.port),
            "-bind_local",
            "-mi",
            self.host,
            "-mp",
            str(self.media_port),
            "-ci",
            self.host,
            "-cp",
            str(self.control_port),
            "-m",
            str(self.max_calls),
            "-nostdin",
            # Whole seconds: this sipp truncates "1500ms" to 1 s.
            "-timeout",
            f"{max(1, math.ceil(self.timeout))}s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(workdir / "errors.log"),
            "-trace_screen",
            "-screen_file",
            str(workdir / "screen.log"),
        ]
        if self.trace_messages:
            command += ["-trace_msg", "-message_file", str(workdir / "messages.log")]
        if self.rtp_echo:
            command.append("-rtp_echo")
        for key, value in self.keys.items():
            command += ["-key", key, value]
        return command + self.scenario_args + self.extra_args

    async def _start_once(self) -> None:
        assert self._tmp is not None
        workdir = Path(self._tmp.name)
        self.port = self._requested_sip_port or free_tcp_udp_port(self.host)
        self.media_port = self._requested_media_port or free_media_port(self.host)
        self.control_port = free_udp_port(self.host)
        self.returncode = None
        command = self._command(workdir)
        logger.debug("starting %s", " ".join(command))
        with (workdir / "output.log").open("wb") as output:
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                # `timeout` makes itself a process group leader: stopping the group
                # stops sipp too, even if `timeout` is killed first.
            )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        assert self._proc is not None
        udp, tcp = self._ready_ports()
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                while True:
                    if self._proc.returncode is not None:
                        self.returncode = self._proc.returncode
                        raise SippError(f"sipp exited at start\n{self.summary()}")
                    bound = _bound_ports("udp", self.host), _bound_ports("tcp", self.host)
                    if udp <= bound[0] and tcp <= bound[1]:
                        return
                    # sipp says nothing when it is ready: poll its sockets.
                    await asyncio.sleep(0.01)
        except TimeoutError:
            raise SippError(
                f"sipp did not bind {sorted(udp | tcp)} within {_READY_TIMEOUT} s\n{self.summary()}"
            ) from None

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        code = await end_process_group(proc, term_grace=3.0)
        if self.returncode is None:
            self.returncode = code

    def _read(self, name: str) -> str:
        if self._tmp is None:
            return self._kept.get(name, "")
        try:
            # newline="" keeps the CRLFs of the SIP messages in the trace.
            with (Path(self._tmp.name) / name).open(errors="replace", newline="") as log:
                return log.read()
        except OSError:
            return ""


_TRACE_HEADER = re.compile(
    r"^-{20,} [^\n]*\n(?:UDP|TCP|TLS|SCTP) message (sent|received)[^\n]*\n\n", re.MULTILINE
)


def _trace_messages(trace: str, direction: str, start: str) -> list[str]:
    """Messages of one direction in a -trace_msg log whose text starts with `start`."""
    parts = _TRACE_HEADER.split(trace)
    # split() gives [before, direction, text, direction, text, ...]
    found = []
    for index in range(1, len(parts) - 1, 2):
        text = parts[index + 1].strip("\r\n")
        if parts[index] == direction and text.startswith(start):
            found.append(text)
    return found


_AUTH_PARAM = re.compile(r'([A-Za-z-]+)\s*=\s*(?:"([^"]*)"|([^\s,]+))')


def digest_valid(request: str, header: str, *, username: str, password: str) -> bool:
    """Whether `request`'s `header` (Authorization or Proxy-Authorization) holds a correct
    MD5 digest response (RFC 2617, qop=auth or none) for `username` and `password`.

    sipp 3.6.1 cannot check a Proxy-Authorization itself; tests check it from the trace.
    """
    method = request.split(" ", 1)[0]
    prefix = header.lower() + ":"
    values = [
        line.split(":", 1)[1].strip()
        for line in request.split("\r\n\r\n", 1)[0].splitlines()
        if line.lower().startswith(prefix)
    ]
    if not values or not values[-1].lower().startswith("digest "):
        return False
    found: list[tuple[str, str, str]] = _AUTH_PARAM.findall(values[-1][7:])
    params = {name.lower(): quoted or token for name, quoted, token in found}
    if params.get("username") != username or params.get("algorithm", "MD5").upper() != "MD5":
        return False

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    ha1 = md5(f"{username}:{params.get('realm', '')}:{password}")
    ha2 = md5(f"{method}:{params.get('uri', '')}")
    nonce = params.get("nonce", "")
    if params.get("qop"):
        if params["qop"] != "auth":
            return False
        tail = f"{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:auth"
    else:
        tail = nonce
    return md5(f"{ha1}:{tail}:{ha2}") == params.get("response", "").lower()


class SippUas(_Sipp):
    """sipp answering calls at `uri` with a UAS scenario; by default it echoes RTP."""

    def __init__(
        self,
        scenario: Path | str,
        *,
        host: str = HOST,
        sip_port: int = 0,
        media_port: int = 0,
        transport: Transport = "u1",
        extra_args: Sequence[str] = (),
        keys: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        max_calls: int = 1,
        rtp_echo: bool = True,
        trace_messages: bool = True,
    ) -> None:
        super().__init__(
            scenario,
            host=host,
            sip_port=sip_port,
            media_port=media_port,
            transport=transport,
            extra_args=extra_args,
            keys=keys,
            timeout=timeout,
            max_calls=max_calls,
            rtp_echo=rtp_echo,
            trace_messages=trace_messages,
        )

    def _ready_ports(self) -> tuple[set[int], set[int]]:
        udp = {self.control_port}
        tcp: set[int] = set()
        (udp if self.transport == "u1" else tcp).add(self.port)
        if self.rtp_echo:
            udp.add(self.media_port)
        return udp, tcp


class SippUac(_Sipp):
    """sipp placing `calls` calls to `target` ("host:port") at `rate` calls per second.

    For load, pass trace_messages=False (the message log slows sipp down) and `limit`
    (sipp's -l, the most calls open at once).
    """

    def __init__(
        self,
        scenario: Path | str,
        target: str,
        *,
        service: str = "service",
        rate: float = 10.0,
        calls: int = 1,
        limit: int | None = None,
        username: str | None = None,
        password: str | None = None,
        host: str = HOST,
        sip_port: int = 0,
        media_port: int = 0,
        transport: Transport = "u1",
        extra_args: Sequence[str] = (),
        keys: Mapping[str, str] | None = None,
        timeout: float = 30.0,
        rtp_echo: bool = False,
        trace_messages: bool = True,
    ) -> None:
        super().__init__(
            scenario,
            host=host,
            sip_port=sip_port,
            media_port=media_port,
            transport=transport,
            extra_args=extra_args,
            keys=keys,
            timeout=timeout,
            max_calls=calls,
            rtp_echo=rtp_echo,
            trace_messages=trace_messages,
        )
        self.target = target
        self.service = service
        self.rate = rate
        self.limit = limit
        self.username = username
        self.password = password

    def _args(self) -> list[str]:
        args = [self.target, "-s", self.service, "-r", f"{self.rate:g}"]
        if self.limit is not None:
            args += ["-l", str(self.limit)]
        if self.username is not None:
            args += ["-au", self.username]
        if self.password is not None:
            args += ["-ap", self.password]
        return args

    def _ready_ports(self) -> tuple[set[int], set[int]]:
        # A TCP client binds no listening socket; the control port shows it has started.
        return {self.control_port}, set()
