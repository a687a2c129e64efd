"""A real SIP phone for tests: baresip 1.0.0 (Debian baresip-core) on 127.0.0.1.

The phone plays a WAV file as its microphone, records what it hears with the sndfile
module, and is driven over the ctrl_tcp module: JSON commands in netstrings, answered
with `{"response": true, ...}`, and events pushed back as `{"event": true, "type": ...}`.

    async with BaresipPhone(tone_wav=tone, record_dir=tmp_path) as phone:
        await phone.dial("sip:echo@127.0.0.1:5080")
        await phone.wait_event("CALL_ESTABLISHED", timeout=5)
        ...
        await phone.hangup()
        await phone.wait_event("CALL_CLOSED", timeout=5)
        received = phone.recordings()

Facts about this baresip version that shaped the code:
- `dial`, `hangup` and `accept` are commands of the menu module, not of the core.
- A call answered automatically (answermode=auto) gives no CALL_INCOMING event, only
  CALL_ESTABLISHED (with `direction: incoming` and the caller's `peeruri`) and CALL_CLOSED.
- `sip_listen 127.0.0.1:P` binds UDP P, TCP P and TCP P+1 (SIP over TLS).
- aufile refuses a WAV whose rate or channels differ from `ausrc_srate`/`ausrc_channels`
  (default: the codec's), so they are set from the file; baresip resamples to the codec.
  The call ends when the file does: make it longer than the call.
- sndfile writes `snd_path/dump-YYYY-MM-DD-hh-mm-ss-{enc,dec}.wav` per call: `enc` is what
  the phone sends (before encoding), `dec` what it hears (after decoding), at the codec's
  rate. The WAV header is only complete once the call is closed. Two calls that start
  in the same second overwrite each other's files.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import shutil
import struct
import tempfile
import wave
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.ports import free_tcp_udp_port, port_is_free
from tests.support.process import ManagedServer

logger = logging.getLogger(__name__)

BARESIP = "baresip"
MODULE_DIR = Path("/usr/lib/baresip/modules")
HOST = "127.0.0.1"
# Audio codec modules loaded when present; the account's audio_codecs picks among them.
_CODEC_MODULES = ("g711.so", "g722.so", "opus.so", "l16.so")
_START_ATTEMPTS = 3


class BaresipError(Exception):
    """baresip failed to start, refused a command, or an awaited event did not come."""


def baresip_available() -> bool:
    return shutil.which(BARESIP) is not None and (MODULE_DIR / "ctrl_tcp.so").exists()


def _netstring(payload: bytes) -> bytes:
    return b"%d:%s," % (len(payload), payload)


class BaresipPhone(ManagedServer):
    """One baresip process with one account `sip:USER@127.0.0.1:PORT`, as an async context."""

    def __init__(
        self,
        *,
        tone_wav: Path,
        record_dir: Path | None = None,
        sip_port: int = 0,
        user: str = "demo",
        codecs: Sequence[str] = ("PCMU/8000/1",),
        auto_answer: bool = True,
        start_timeout: float = 5.0,
        command_timeout: float = 5.0,
    ) -> None:
        self.tone_wav = tone_wav.resolve()
        self._record_dir = record_dir
        self._requested_port = sip_port
        self.user = user
        self.codecs = list(codecs)
        self.auto_answer = auto_answer
        self.start_timeout = start_timeout
        self.command_timeout = command_timeout
        self.sip_port = sip_port
        self.events: list[dict[str, Any]] = []
        self._consumed: set[int] = set()
        self._events_changed = asyncio.Condition()
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tokens = itertools.count(1)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._read_task: asyncio.Task[None] | None = None

    # -- public API -------------------------------------------------------------------

    @property
    def uri(self) -> str:
        return f"sip:{self.user}@{HOST}:{self.sip_port}"

    @property
    def record_dir(self) -> Path:
        if self._record_dir is not None:
            return self._record_dir
        if self._tmp is None:
            raise BaresipError("phone not started")
        return Path(self._tmp.name) / "recordings"

    @property
    def log_path(self) -> Path:
        """baresip's console output (kept until the phone stops), for failure messages."""
        if self._tmp is None:
            raise BaresipError("phone not started")
        return Path(self._tmp.name) / "baresip.log"

    def log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, BaresipError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def command(self, command: str, params: str | None = None) -> str:
        """Run a baresip command; return its output, raise BaresipError if it failed."""
        timeout = self.command_timeout
        if self._writer is None:
            raise BaresipError("phone not started")
        token = str(next(self._tokens))
        message: dict[str, str] = {"command": command, "token": token}
        if params is not None:
            message["params"] = params
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[token] = future
        try:
            self._writer.write(_netstring(json.dumps(message).encode()))
            await self._writer.drain()
            async with asyncio.timeout(timeout):
                response = await future
        except TimeoutError:
            raise BaresipError(f"no response to {command!r} within {timeout} s") from None
        finally:
            self._pending.pop(token, None)
        data = str(response.get("data", ""))
        if not response.get("ok"):
            raise BaresipError(f"{command} {params or ''} failed: {data.strip()}")
        return data

    async def dial(self, uri: str) -> None:
        await self.command("dial", uri)

    async def hangup(self) -> None:
        await self.command("hangup")

    async def answer(self) -> None:
        """Answer the ringing incoming call (for phones made with auto_answer=False)."""
        await self.command("accept")

    # The timeout is part of the call for readability in tests: wait_event("X", timeout=5).
    async def wait_event(self, kind: str, timeout: float = 10.0) -> dict[str, Any]:
        """The oldest event of type `kind` (e.g. CALL_ESTABLISHED) not yet returned.

        Events are kept from the start, so an event that came before the wait is found.
        """
        try:
            async with asyncio.timeout(timeout), self._events_changed:
                while True:
                    for index, event in enumerate(self.events):
                        if index not in self._consumed and event.get("type") == kind:
                            self._consumed.add(index)
                            return event
                    if self._read_task is None or self._read_task.done():
                        raise BaresipError(f"control connection closed while waiting for {kind}")
                    await self._events_changed.wait()
        except TimeoutError:
            seen = [e.get("type") for e in self.events]
            raise BaresipError(
                f"no {kind} within {timeout} s; events so far: {seen}\n{self.log_tail()}"
            ) from None

    def event_types(self) -> list[str]:
        """The types of all events so far, in order (for asserting call histories)."""
        return [str(e.get("type")) for e in self.events]

    def recordings(self) -> list[Path]:
        """WAV files of what this phone heard (sndfile's `-dec` files), oldest first."""
        return sorted(self.record_dir.glob("dump-*-dec.wav"))

    def sent_recordings(self) -> list[Path]:
        """WAV files of what this phone sent (sndfile's `-enc` files), oldest first."""
        return sorted(self.record_dir.glob("dump-*-enc.wav"))

    async def wait_recordings_closed(self) -> list[Path]:
        """recordings(), once sndfile has closed them (their WAV headers are final)."""
        async with asyncio.timeout(self.command_timeout):
            while True:
                files = self.recordings()
                if files and all(_wav_closed(f) for f in files):
                    return files
                # sndfile announces nothing on close: poll the headers.
                await asyncio.sleep(0.05)

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="baresip-")
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    await self._start_once()
                    return
                except BaresipError:
                    await self._stop_process()
                    # A port picked here can be taken by someone else before baresip binds it.
                    if self._requested_port or attempt == _START_ATTEMPTS:
                        raise
                    logger.info("baresip did not start (attempt %d), retrying", attempt)
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        if self._writer is not None and self._proc is not None and self._proc.returncode is None:
            with contextlib.suppress(BaresipError, OSError):
                await self.command("quit")
        await self._stop_process()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    # -- internals ----------------------------------------------------------------------

    async def _start_once(self) -> None:
        assert self._tmp is not None
        confdir = Path(self._tmp.name)
        self.record_dir.mkdir(parents=True, exist_ok=True)
        self.sip_port = self._requested_port or _free_sip_port()
        ctrl_port = free_tcp_udp_port()
        (confdir / "config").write_text(self._config(ctrl_port))
        (confdir / "accounts").write_text(self._account_line() + "\n")
        # Without these files baresip writes templates (with example accounts) of its own.
        (confdir / "contacts").write_text("")
        with self.log_path.open("wb") as log:
            self._proc = await asyncio.create_subprocess_exec(
                BARESIP,
                "-f",
                str(confdir),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=asyncio.subprocess.STDOUT,
            )
        await self._connect(ctrl_port)

    async def _connect(self, ctrl_port: int) -> None:
        assert self._proc is not None
        try:
            async with asyncio.timeout(self.start_timeout):
                while True:
                    if self._proc.returncode is not None:
                        raise BaresipError(
                            f"baresip exited with {self._proc.returncode}\n{self.log_tail()}"
                        )
                    try:
                        reader, self._writer = await asyncio.open_connection(HOST, ctrl_port)
                        break
                    except OSError:
                        # ctrl_tcp listens only once baresip has loaded its modules.
                        await asyncio.sleep(0.02)
        except TimeoutError:
            raise BaresipError(
                f"baresip control port not open within {self.start_timeout} s\n{self.log_tail()}"
            ) from None
        self._read_task = asyncio.create_task(self._read_loop(reader))

    def _config(self, ctrl_port: int) -> str:
        with wave.open(str(self.tone_wav), "rb") as src:
            rate, channels = src.getframerate(), src.getnchannels()
        modules = [m for m in _CODEC_MODULES if (MODULE_DIR / m).exists()]
        lines = [
            "poll_method epoll",
            f"sip_listen {HOST}:{self.sip_port}",
            f"net_interface {HOST}",
            # Names are never resolved in tests; keep any lookup on loopback all the same.
            f"dns_server {HOST}:53",
            "call_local_timeout 120",
            "call_max_calls 4",
            f"audio_source aufile,{self.tone_wav}",
            f"ausrc_srate {rate}",
            f"ausrc_channels {channels}",
            # aubridge is a silent speaker that costs nothing (alsa,null burns a core).
            "audio_player aubridge,speaker",
            "audio_alert aubridge,alert",
            "audio_level no",
            "ausrc_format s16",
            "auplay_format s16",
            "auenc_format s16",
            "audec_format s16",
            "rtcp_mux no",
            "jitter_buffer_delay 5-10",
            "rtp_stats no",
            f"module_path {MODULE_DIR}",
            *(f"module {m}" for m in modules),
            "module aubridge.so",
            "module aufile.so",
            "module sndfile.so",
            f"snd_path {self.record_dir.resolve()}",
            "module_tmp account.so",
            "module_app menu.so",
            # menu's status line would fill the log with a line every 100 ms.
            "statmode_default off",
            "module_app ctrl_tcp.so",
            f"ctrl_tcp_listen {HOST}:{ctrl_port}",
        ]
        return "\n".join(lines) + "\n"

    def _account_line(self) -> str:
        answermode = "auto" if self.auto_answer else "manual"
        return (
            f"<sip:{self.user}@{HOST}:{self.sip_port}>;regint=0;answermode={answermode}"
            f";audio_codecs={','.join(self.codecs)}"
        )

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                length = await reader.readuntil(b":")
                payload = await reader.readexactly(int(length[:-1]))
                if await reader.readexactly(1) != b",":
                    raise BaresipError("malformed netstring from ctrl_tcp")
                await self._dispatch(json.loads(payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # baresip quit or died
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BaresipError("control connection closed"))
            async with self._events_changed:
                self._events_changed.notify_all()

    async def _dispatch(self, message: dict[str, Any]) -> None:
        if message.get("response"):
            future = self._pending.get(str(message.get("token")))
            if future is not None and not future.done():
                future.set_result(message)
        elif message.get("event"):
            logger.debug("baresip %s: %s", self.uri, message)
            async with self._events_changed:
                self.events.append(message)
                self._events_changed.notify_all()

    async def _stop_process(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
            self._writer = None
        if self._read_task is not None:
            self._read_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._read_task
            self._read_task = None
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for signal_process, grace in ((None, 2.0), (proc.terminate, 2.0), (proc.kill, 5.0)):
            if proc.returncode is not None:
                break
            if signal_process is not None:
                with contextlib.suppress(ProcessLookupError):
                    signal_process()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), grace)


def _free_sip_port() -> int:
    """A port free for UDP and TCP, with TCP port+1 free too (baresip's SIP over TLS)."""
    for _ in range(100):
        port = free_tcp_udp_port(HOST)
        if port < 65535 and port_is_free(port + 1, HOST, udp=False):
            return port
    raise BaresipError("no free SIP port on loopback")


def _wav_closed(path: Path) -> bool:
    """Whether the RIFF size in the header matches the file: libsndfile writes it on close."""
    try:
        with path.open("rb") as f:
            header = f.read(8)
        size = path.stat().st_size
    except OSError:
        return False
    if len(header) < 8 or header[:4] != b"RIFF":
        return False
    (riff_size,) = struct.unpack("<I", header[4:])
    return bool(riff_size + 8 == size and size > 44)
