"""The processes under test, all on 127.0.0.1 with free ports: sipp, sipgw, Janus.

Each is a context manager that starts the process, waits until it listens, and stops it
(SIGTERM, then SIGKILL) on exit. Logs go to a temporary directory kept on failure.
"""

from __future__ import annotations

import contextlib
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
UAS_SCENARIO = REPO / "tests" / "sipp" / "uas_answer_wait_bye.xml"
UAC_SCENARIO = REPO / "benchmarks" / "sipp" / "uac_call.xml"
JANUS_DIR = Path(__file__).resolve().parent / "janus"
JANUS_LIBS = Path("/usr/lib/x86_64-linux-gnu/janus")


class PeerError(Exception):
    """A process under test did not start or died."""


def free_port(kind: socket.SocketKind = socket.SOCK_DGRAM) -> int:
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def port_free(port: int, kind: socket.SocketKind) -> bool:
    with socket.socket(socket.AF_INET, kind) as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            return False
        return True


def free_even_block(size: int) -> int:
    """An even UDP port P with P..P+size-1 free right now."""
    for _ in range(200):
        port = free_port()
        if port % 2 == 0 and port + size < 65535:
            if all(port_free(p, socket.SOCK_DGRAM) for p in range(port, port + size)):
                return port
    raise PeerError(f"no free block of {size} UDP ports")


def rtp_range(calls: int) -> tuple[int, int]:
    """A port range for `calls` RTP+RTCP pairs with headroom, somewhere not in common use.

    Ports in it may be taken by others; sipgw and Janus both skip a port they cannot bind.
    """
    width = max(200, 4 * calls + 100)
    low = random.randrange(10000, 30000 - width) & ~1
    return low, low + width


def _pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """For Popen's preexec_fn: the affinity survives exec and is inherited by every
    thread and child process the program starts."""
    if cpus is None:
        return None
    wanted = set(cpus)
    return lambda: os.sched_setaffinity(0, wanted)


def _wait(predicate: object, proc: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise PeerError(f"{what} exited with {proc.returncode}")
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.05)
    raise PeerError(f"{what} not ready after {timeout} s")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    for sig, grace in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(grace)


def sipp_counters(path: Path, wanted: tuple[str, ...]) -> dict[str, int]:
    """Cumulative counters from the last line of sipp's -trace_stat file."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return {}
    if len(lines) < 2:
        return {}
    names, values = lines[0].split(";"), lines[-1].split(";")
    return {n: int(v) for n, v in zip(names, values, strict=False) if n in wanted}


class Sipp:
    """One sipp UAS for every call: answers PCMU and echoes RTP (-rtp_echo)."""

    def __init__(self, workdir: Path, budget_s: float) -> None:
        self.workdir = workdir
        self.budget_s = budget_s
        self.port = 0
        self.media_port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"sip:service@{HOST}:{self.port}"

    def __enter__(self) -> Sipp:
        for _ in range(3):
            self.port = free_port()
            self.media_port = free_even_block(4)
            control = free_port()
            stat = self.workdir / "sipp_stat.csv"
            args = [
                "timeout",
                f"{self.budget_s:.0f}",
                "sipp",
                "-sf",
                str(UAS_SCENARIO),
                "-i",
                HOST,
                "-p",
                str(self.port),
                "-mi",
                HOST,
                "-mp",
                str(self.media_port),
                "-cp",
                str(control),
                "-rtp_echo",
                "-nostdin",
                "-trace_stat",
                "-stf",
                str(stat),
                "-fd",
                "1",
                "-trace_err",
                "-error_file",
                str(self.workdir / "sipp_errors.log"),
            ]
            with (self.workdir / "sipp.out").open("ab") as out:
                self.proc = subprocess.Popen(
                    args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
                )
            try:
                _wait(
                    lambda: (
                        not port_free(self.port, socket.SOCK_DGRAM)
                        and not port_free(self.media_port, socket.SOCK_DGRAM)
                    ),
                    self.proc,
                    "sipp",
                    5,
                )
                return self
            except PeerError:
                _stop(self.proc)
        raise PeerError("sipp did not start (see sipp.out)")

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def stats(self) -> dict[str, int]:
        wanted = ("SuccessfulCall(C)", "FailedCall(C)", "IncomingCall(C)", "CurrentCall")
        return sipp_counters(self.workdir / "sipp_stat.csv", wanted)


class SippUac:
    """sipp placing `calls` calls to `target` ("host:port") at `rate` per second, each
    INVITE/200/ACK, `hold_ms` in the call, BYE/200; no RTP. Blocks until sipp is done."""

    def __init__(self, workdir: Path, target: str, service: str) -> None:
        self.workdir = workdir
        self.target = target
        self.service = service
        self.stat = workdir / "sipp_uac_stat.csv"

    def run(self, *, rate: float, calls: int, limit: int, hold_ms: int, timeout: float) -> int:
        args = [
            "timeout",
            f"{timeout:.0f}",
            "sipp",
            self.target,
            "-sf",
            str(UAC_SCENARIO),
            "-s",
            self.service,
            "-i",
            HOST,
            "-p",
            str(free_port()),
            "-mi",
            HOST,
            "-mp",
            str(free_even_block(4)),
            "-r",
            f"{rate:g}",
            "-m",
            str(calls),
            "-l",
            str(limit),
            "-key",
            "hold_ms",
            str(hold_ms),
            "-nostdin",
            "-trace_stat",
            "-stf",
            str(self.stat),
            "-fd",
            "1",
            "-trace_err",
            "-error_file",
            str(self.workdir / "sipp_uac_errors.log"),
        ]
        with (self.workdir / "sipp_uac.out").open("ab") as out:
            done = subprocess.run(args, stdout=out, stderr=subprocess.STDOUT, check=False)
        return done.returncode

    def stats(self) -> dict[str, int]:
        wanted = ("SuccessfulCall(C)", "FailedCall(C)", "OutgoingCall(C)", "Retransmissions(C)")
        return sipp_counters(self.stat, wanted)


class Sipgw:
    """`sipgw run` with its trunk pointing at sipp."""

    def __init__(
        self,
        workdir: Path,
        trunk: str,
        calls: int,
        checkout: Path | None = None,
        processes: int = 1,
        cpus: set[int] | None = None,
    ) -> None:
        """`trunk` empty: demo mode (no trunk, the embedded demo endpoint answers 600).
        `cpus`: run it (and every process and thread it starts) on these CPUs only."""
        self.workdir = workdir
        self.cpus = cpus
        self.processes = processes
        self.checkout = checkout or REPO
        self.trunk = trunk
        self.calls = calls
        self.http_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "sipgw.log"

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.http_port}/ws"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PeerError("not started")
        return self.proc.pid

    def __enter__(self) -> Sipgw:
        self.http_port = free_port(socket.SOCK_STREAM)
        low, high = rtp_range(self.calls)
        # Every load generator's page comes from 127.0.0.1: lift the per-address socket cap.
        config = self.workdir / "sipgw-bench.toml"
        cap = (self.checkout / "gateway" / "signin").is_dir()  # older checkouts had none
        config.write_text("[server]\nmax_sockets_per_address = 0\n" if cap else "")
        args = [
            sys.executable,
            "-m",
            "gateway.cli",
            "run",
            "--config",
            str(config),
            "--host",
            HOST,
            "--http-port",
            str(self.http_port),
            "--sip-port",
            "0",
            *(["--trunk", self.trunk] if self.trunk else []),
            "--rtp-ports",
            f"{low}-{high}",
            "--ice-address",
            HOST,
        ]
        if self.processes > 1:
            args += ["--workers", str(self.processes)]
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                args,
                cwd=self.checkout,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_pinned(self.cpus),
            )
        _wait(lambda: b"sipgw ready" in self.log.read_bytes(), self.proc, "sipgw", 60)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)

    def logged_port(self, pattern: bytes) -> int:
        """A port the gateway printed, e.g. rb"SIP on [\\d.]+:(\\d+)"."""
        match = re.search(pattern, self.log.read_bytes())
        if match is None:
            raise PeerError(f"{pattern!r} not in {self.log}")
        return int(match.group(1))


def build_noloopback(workdir: Path) -> Path:
    """Compile the getifaddrs() shim (benchmarks/janus/noloopback.c) with gcc."""
    if shutil.which("gcc") is None:
        raise PeerError("gcc is needed to build benchmarks/janus/noloopback.c")
    out = workdir / "libnoloopback.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(JANUS_DIR / "noloopback.c"), "-ldl"],
        check=True,
    )
    return out


class Janus:
    """Janus 1.1.2 (Debian package janus) with a private config dir: WebSocket transport
    and the SIP plugin only, everything on 127.0.0.1."""

    def __init__(self, workdir: Path, calls: int, cpus: set[int] | None = None) -> None:
        self.workdir = workdir
        self.calls = calls
        self.cpus = cpus
        self.ws_port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = workdir / "janus.log"

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.ws_port}/"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise PeerError("not started")
        return self.proc.pid

    def _write_config(self) -> Path:
        conf = self.workdir / "janus-conf"
        conf.mkdir(exist_ok=True)
        ice_low, ice_high = rtp_range(self.calls)
        sip_low, sip_high = rtp_range(self.calls)
        keep = {"libjanus_sip.so"}
        plugins = sorted(
            p.name for p in (JANUS_LIBS / "plugins").glob("libjanus_*.so") if p.name not in keep
        )
        transports = sorted(
            p.name
            for p in (JANUS_LIBS / "transports").glob("libjanus_*.so")
            if p.name != "libjanus_websockets.so"
        )
        (conf / "janus.jcfg").write_text(
            f"""general: {{
    configs_folder = "{conf}"
    plugins_folder = "{JANUS_LIBS}/plugins"
    transports_folder = "{JANUS_LIBS}/transports"
    events_folder = "{JANUS_LIBS}/events"
    loggers_folder = "{JANUS_LIBS}/loggers"
    debug_level = 3
    session_timeout = 60
}}
media: {{
    ipv6 = false
    rtp_port_range = "{ice_low}-{ice_high}"
}}
nat: {{
    ice_enforce_list = "127.0.0.1"
    nice_debug = false
}}
plugins: {{
    disable = "{",".join(plugins)}"
}}
transports: {{
    disable = "{",".join(transports)}"
}}
loggers: {{
    disable = "libjanus_jsonlog.so"
}}
events: {{
    broadcast = false
}}
"""
        )
        (conf / "janus.transport.websockets.jcfg").write_text(
            f"""general: {{
    json = "plain"
    ws = true
    ws_port = {self.ws_port}
    ws_ip = "{HOST}"
    wss = false
}}
admin: {{
    admin_ws = false
    admin_wss = false
}}
"""
        )
        (conf / "janus.plugin.sip.jcfg").write_text(
            f"""general: {{
    local_ip = "{HOST}"
    sdp_ip = "{HOST}"
    keepalive_interval = 0
    behind_nat = false
    register_ttl = 3600
    rtp_port_range = "{sip_low}-{sip_high}"
    events = false
}}
"""
        )
        return conf

    def __enter__(self) -> Janus:
        if shutil.which("janus") is None:
            raise PeerError("janus is not installed (Debian package janus)")
        shim = build_noloopback(self.workdir)
        self.ws_port = free_port(socket.SOCK_STREAM)
        conf = self._write_config()
        env = {**os.environ, "LD_PRELOAD": str(shim)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                ["janus", "-C", str(conf / "janus.jcfg"), "-F", str(conf)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_pinned(self.cpus),
            )
        _wait(lambda: not port_free(self.ws_port, socket.SOCK_STREAM), self.proc, "janus", 20)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None:
            _stop(self.proc)


@contextlib.contextmanager
def workdir(keep: bool = False) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="sipgw-bench-"))
    try:
        yield path
    finally:
        if not keep:
            shutil.rmtree(path, ignore_errors=True)


def sipgw_version(checkout: Path | None = None) -> dict[str, object]:
    """The commit under test, and files of gateway/ changed in the working tree (other
    engineers edit the same checkout while benchmarks run)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=checkout or REPO, capture_output=True, text=True, timeout=10
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = [line[3:] for line in git("status", "--porcelain", "gateway").splitlines()]
    return {
        "checkout": str(checkout or REPO),
        "commit": git("rev-parse", "--short", "HEAD"),
        "uncommitted_gateway_files": dirty,
    }


def janus_version() -> str:
    try:
        out = subprocess.run(["janus", "--version"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return ""
    return next((line for line in out.stdout.splitlines() if "version" in line.lower()), "")
