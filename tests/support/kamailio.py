"""Kamailio (Debian package kamailio 5.6.3) as a registrar and proxy for tests, on loopback.

    async with Kamailio() as kamailio:               # tests/kamailio/registrar.cfg
        peer = kamailio.peer()                       # Peer(UDP, 127.0.0.1, PORT)
        ...                                          # REGISTER alice/secret, realm sipgw.test
        print(kamailio.log())                        # everything it logged

The configuration is a template of tests/kamailio/ in which every `@@NAME@@` is replaced
(Kamailio's own syntax uses `$`, `{}` and `%`, so no Python formatting is used). The
standard template listens on UDP and TCP on one free port of 127.0.0.1, keeps bindings in
memory, authenticates REGISTER with digest against a fixed set of users, and relays other
requests for a local user to the Contact that user registered (404 when there is none).

Facts that shaped the code:
- `kamailio -f CFG -DD -E` stays in the foreground (its workers are forked children) and
  logs to stderr. It is started in a new session so that stopping its process group stops
  the workers too.
- It says nothing machine-readable when ready: the runner polls /proc/net for its sockets.
  Ready in 0.1-0.7 s here.
- A port chosen here can be taken before Kamailio binds it; start is retried on a new port.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path

from gateway.sip.transport import Peer, TransportKind
from tests.support.ports import free_tcp_udp_port
from tests.support.process import ManagedServer, end_process_group

logger = logging.getLogger(__name__)

KAMAILIO = "kamailio"
CONFIG_DIR = Path(__file__).resolve().parent.parent / "kamailio"
HOST = "127.0.0.1"
REALM = "sipgw.test"
USERS: Mapping[str, str] = {"alice": "secret", "bob": "secret"}
MODULE_DIRS = (
    Path("/usr/lib/x86_64-linux-gnu/kamailio/modules"),
    Path("/usr/lib/aarch64-linux-gnu/kamailio/modules"),
    Path("/usr/lib/kamailio/modules"),
    Path("/usr/lib64/kamailio/modules"),
)
_READY_TIMEOUT = 10.0
_START_ATTEMPTS = 3


class KamailioError(Exception):
    """Kamailio could not be started, or its configuration template is unusable."""


def module_dir() -> Path | None:
    for directory in MODULE_DIRS:
        if (directory / "registrar.so").is_file():
            return directory
    return None


def kamailio_available() -> bool:
    return shutil.which(KAMAILIO) is not None and module_dir() is not None


def render(template: str, values: Mapping[str, str]) -> str:
    """`template` with each @@NAME@@ replaced; raises KamailioError if one is left over."""
    text = template
    for name, value in values.items():
        text = text.replace(f"@@{name}@@", value)
    leftover = [part.split("@@", 1)[0] for part in text.split("@@")[1::2]]
    if leftover:
        raise KamailioError(f"no value for @@{leftover[0]}@@ in the Kamailio template")
    return text


def _quote(value: str) -> str:
    if any(c in value for c in '"\\\n\r'):
        raise KamailioError(f"cannot put {value!r} in a Kamailio string")
    return f'"{value}"'


def _listening(port: int) -> bool:
    """Whether something listens on 127.0.0.1:`port` for both UDP and TCP (/proc/net)."""
    hex_port = f"{port:04X}"
    found = {"udp": False, "tcp": False}
    for kind in found:
        try:
            lines = Path(f"/proc/net/{kind}").read_text().splitlines()[1:]
        except OSError:
            return False
        for line in lines:
            fields = line.split()
            if len(fields) < 4 or fields[1] != f"0100007F:{hex_port}":
                continue
            # TCP state 0A is LISTEN.
            if kind == "udp" or fields[3] == "0A":
                found[kind] = True
    return all(found.values())


class Kamailio(ManagedServer):
    """One Kamailio process with its config and log in a temporary directory."""

    def __init__(
        self,
        template: str | Path = "registrar.cfg",
        *,
        users: Mapping[str, str] = USERS,
        realm: str = REALM,
        host: str = HOST,
        min_expires: int = 10,
        nonce_expire: int = 300,
        debug: int = 2,
    ) -> None:
        path = Path(template)
        self.template = path if path.is_file() else CONFIG_DIR / path.name
        if not self.template.is_file():
            raise KamailioError(f"no Kamailio template {template!r} in {CONFIG_DIR}")
        self.users = dict(users)
        self.realm = realm
        self.host = host
        self.min_expires = min_expires
        self.nonce_expire = nonce_expire
        self.debug = debug
        self.port = 0
        self.returncode: int | None = None
        self._proc: asyncio.subprocess.Process | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._kept_log = ""

    # -- public API ---------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    def peer(self, transport: TransportKind = TransportKind.UDP) -> Peer:
        """Where to send requests to Kamailio."""
        return Peer(transport, self.host, self.port)

    def uri(self, user: str | None = None) -> str:
        """sip:[user@]HOST:PORT, a Request-URI Kamailio takes as its own."""
        return f"sip:{user + '@' if user else ''}{self.host}:{self.port}"

    def config(self) -> str:
        """The configuration as written for this run ("" before start)."""
        if self._tmp is None:
            return ""
        path = Path(self._tmp.name) / "kamailio.cfg"
        return path.read_text() if path.is_file() else ""

    def log(self) -> str:
        """Everything Kamailio wrote to stdout and stderr."""
        if self._tmp is None:
            return self._kept_log
        try:
            return (Path(self._tmp.name) / "kamailio.log").read_text(errors="replace")
        except OSError:
            return ""

    def render(self, port: int) -> str:
        """The template filled in for `port`."""
        modules = module_dir()
        if modules is None:
            raise KamailioError("Kamailio modules not found (Debian package kamailio)")
        lines = []
        for name, password in self.users.items():
            if not name.isalnum():
                raise KamailioError(f"user name {name!r} is not alphanumeric")
            lines.append(f"\t$sht(users=>{name}) = {_quote(password)};")
        return render(
            self.template.read_text(),
            {
                "HOST": self.host,
                "PORT": str(port),
                "REALM": self.realm,
                "MPATH": str(modules),
                "USERS": "\n".join(lines),
                "MIN_EXPIRES": str(self.min_expires),
                "NONCE_EXPIRE": str(self.nonce_expire),
                "DEBUG": str(self.debug),
            },
        )

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not kamailio_available():
            raise KamailioError("kamailio or its modules not installed (Debian package kamailio)")
        self._tmp = tempfile.TemporaryDirectory(prefix="kamailio-")
        try:
            for attempt in range(1, _START_ATTEMPTS + 1):
                try:
                    await self._start_once()
                    return
                except KamailioError:
                    if attempt == _START_ATTEMPTS or "bind" not in self.log().lower():
                        raise
                    logger.info("Kamailio could not bind port %d, retrying", self.port)
                    await self._stop_process()
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Stop Kamailio and its workers; its log stays readable."""
        await self._stop_process()
        if self._tmp is not None:
            self._kept_log = self.log()
            self._tmp.cleanup()
            self._tmp = None

    # -- internals ----------------------------------------------------------------------

    async def _start_once(self) -> None:
        assert self._tmp is not None
        workdir = Path(self._tmp.name)
        self.port = free_tcp_udp_port(self.host)
        config = workdir / "kamailio.cfg"
        config.write_text(self.render(self.port))
        command = [KAMAILIO, "-f", str(config), "-DD", "-E", "-Y", str(workdir)]
        logger.debug("starting %s", " ".join(command))
        with (workdir / "kamailio.log").open("wb") as output:
            self._proc = await asyncio.create_subprocess_exec(
                *command,
                cwd=workdir,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            async with asyncio.timeout(_READY_TIMEOUT):
                while not _listening(self.port):
                    if self._proc.returncode is not None:
                        self.returncode = self._proc.returncode
                        raise KamailioError(f"kamailio exited at start:\n{self.log()[-3000:]}")
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise KamailioError(
                f"kamailio did not listen on {self.host}:{self.port} within {_READY_TIMEOUT} s:"
                f"\n{self.log()[-3000:]}"
            ) from None

    async def _stop_process(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            # Our own session: the group holds Kamailio and the workers it forked.
            self.returncode = await end_process_group(proc)
