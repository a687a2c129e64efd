"""Mutation fuzzing of the SIP stack of a running gateway, over UDP and TCP (issue 11).

Real messages (sipp's scenarios, RFC 4475's torture messages, what our UA sends) are
mutated with a seeded generator (bit flips, byte inserts and deletes, header lines
duplicated, dropped or spliced in from another message, truncation, junk values) and sent
to the gateway for SIPGW_FUZZ_SECONDS (default 30). Throughout, and at the end:

- no exception escapes to the event loop, and no ERROR or traceback reaches the log;
- every INVITE the gateway can answer gets a final response (our own parser, run here on
  the same bytes, says which ones are answerable; the others are dropped by design);
- OPTIONS is answered 200 every FUZZ_OPTIONS_EVERY messages;
- memory stays bounded, and once the timers have run, no transaction, port or connection
  is left.

A failure prints the seed; SIPGW_FUZZ_SEED=<seed> replays the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sipmessage import Request

from gateway.sip import message as sipmsg
from tests.support.gateway import RunningGateway
from tests.test_bad_input import GOOD_OPTIONS
from tests.test_sip_message import INVALID, VALID, crlf

FUZZ_SECONDS = float(os.environ.get("SIPGW_FUZZ_SECONDS", "30"))
FUZZ_SEED = int(os.environ.get("SIPGW_FUZZ_SEED", str(int(time.time()) % 1_000_000)))
FUZZ_OPTIONS_EVERY = 100
# Growth allowed in resident memory over the run, after a warm-up.
RSS_SLACK = 40 * 1024 * 1024
SIPP = Path(__file__).parent / "sipp"

_SIPP_FIELDS = {
    "service": "600",
    "remote_ip": "127.0.0.1",
    "remote_port": "5060",
    "local_ip": "127.0.0.1",
    "local_port": "5070",
    "transport": "UDP",
    "call_number": "1",
    "pid": "42",
    "call_id": "1-42@127.0.0.1",
    "branch": "z9hG4bK-42-1-0",
    "media_ip": "127.0.0.1",
    "media_port": "6000",
    "local_ip_type": "4",
    "media_ip_type": "4",
    "user": "alice",
    "next_url": "sip:600@127.0.0.1:5060",
    "routes": "",
    "peer_tag_param": "",
}


def _sipp_messages() -> Iterator[bytes]:
    """The <send> messages of our sipp scenarios, with sipp's fields filled in."""
    for path in sorted(SIPP.glob("*.xml")):
        for block in re.findall(r"<send[^>]*>\s*<!\[CDATA\[(.*?)\]\]>", path.read_text(), re.S):
            lines = [line.strip() for line in block.strip().splitlines()]
            text = "\n".join(line for line in lines if line and "[last_" not in line)
            text = re.sub(r"\[(\w+)\]", lambda m: _SIPP_FIELDS.get(m.group(1), "1"), text)
            head, _, body = text.partition("\n\n")
            body_bytes = crlf(body + "\n") if body else b""
            head = re.sub(r"(?im)^Content-Length:.*$", f"Content-Length: {len(body_bytes)}", head)
            yield crlf(head + "\n\n") + body_bytes


def _corpus() -> list[bytes]:
    messages = list(_sipp_messages())
    messages += [crlf(text) for text in VALID.values()]
    messages += [crlf(entry[0]) for entry in INVALID.values()]
    messages.append(GOOD_OPTIONS.format(port=5070, branch="corpus").encode())
    assert len(messages) > 50
    return messages


# --- mutations ----------------------------------------------------------------------------


def _bit_flip(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _i in range(rng.randint(1, 4)):
        if buf:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
    return bytes(buf)


def _insert(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    at = rng.randint(0, len(data))
    junk = rng.choice(
        [bytes([rng.randrange(256)]), b"\r\n", b":", b";", b"<", b">", b'"', b"\\", b",", b"\x00"]
    )
    return data[:at] + junk * rng.randint(1, 64) + data[at:]


def _delete(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    at = rng.randint(0, len(data))
    return data[:at] + data[at + rng.randint(1, 32) :]


def _lines(data: bytes) -> tuple[list[bytes], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n"), body


def _join(lines: list[bytes], body: bytes) -> bytes:
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


def _duplicate_header(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    lines, body = _lines(data)
    if len(lines) > 1:
        line = lines[rng.randrange(1, len(lines))]
        lines.insert(rng.randrange(1, len(lines) + 1), line)
    return _join(lines, body)


def _drop_header(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    lines, body = _lines(data)
    if len(lines) > 1:
        del lines[rng.randrange(1, len(lines))]
    return _join(lines, body)


def _splice(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    lines, body = _lines(data)
    other, _ = _lines(rng.choice(corpus))
    lines.insert(rng.randrange(0, len(lines) + 1), rng.choice(other))
    return _join(lines, body)


def _junk_value(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    lines, body = _lines(data)
    index = rng.randrange(0, len(lines))
    name, colon, _value = lines[index].partition(b":")
    junk = rng.choice(
        [b"<sip:@@>", b"<>", b'"unterminated <sip:a@b>', b"sip:a b", b"\xff\xfe", b"9" * 40]
    )
    lines[index] = name + colon + b" " + junk if colon else junk
    return _join(lines, body)


def _truncate(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    return data[: rng.randint(0, len(data))]


def _line_ends(rng: random.Random, data: bytes, _: list[bytes]) -> bytes:
    return data.replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\n ", b"\r\n\t"]))


MUTATIONS: list[Callable[[random.Random, bytes, list[bytes]], bytes]] = [
    _bit_flip,
    _insert,
    _delete,
    _duplicate_header,
    _drop_header,
    _splice,
    _junk_value,
    _truncate,
    _line_ends,
]


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes], serial: int) -> bytes:
    # Unique Call-ID and branch, so that every INVITE is a new transaction we can follow.
    data = data.replace(b"z9hG4bK", f"z9hG4bKf{serial}x".encode())
    data = re.sub(rb"(?im)^(Call-ID|i)\s*:\s*", rb"\g<0>f%d-" % serial, data)
    for _i in range(rng.choice([0, 1, 1, 1, 2, 3])):
        data = rng.choice(MUTATIONS)(rng, data, corpus)
    return data[: sipmsg.MAX_MESSAGE_SIZE]


def _invite_key(data: bytes) -> tuple[str, str] | None:
    """(Call-ID, branch) of an INVITE the gateway must answer, judged by the same parser.

    INVITEs without an RFC 3261 branch are not followed: the transaction layer matches
    requests by branch only, so every such INVITE is a retransmission of the first one
    (RFC 3261 section 17.2.3's RFC 2543 matching is not implemented).
    """
    try:
        message = sipmsg.parse(data)
    except sipmsg.SipParseError as exc:
        if exc.request is None:
            return None
        message = exc.request
    if not isinstance(message, Request) or message.method != "INVITE":
        return None
    branch = sipmsg.branch_of(message)
    if not branch.startswith(sipmsg.MAGIC_COOKIE + "f"):
        return None
    return (message.headers["Call-ID"], branch)


# --- watching the gateway -----------------------------------------------------------------


class _Problems(logging.Handler):
    """Every ERROR record and every record with a traceback: none may appear."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.ERROR or record.exc_info or record.stack_info:
            self.records.append(record)


def _rss() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


_STATUS = re.compile(rb"SIP/2\.0 (\d{3}) ")
_CALL_ID = re.compile(rb"\r\nCall-ID: (.*?)\r\n", re.S)
_VIA = re.compile(rb"\r\nVia: (.*?)(?:,|\r\n)", re.S)
_BRANCH = re.compile(rb";\s*branch\s*=\s*([^;,\s]+)", re.IGNORECASE)


class _UdpPeer:
    """One UDP socket whose final responses are collected by (Call-ID, branch)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.setblocking(False)
        self.answered: set[tuple[str, str]] = set()
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 65535)
            # Read as plainly as possible: a 400 echoes the request's bad From or To.
            status = _STATUS.match(data)
            call_id = _CALL_ID.search(data)
            via = _VIA.search(data)
            if status and call_id and via and int(status.group(1)) >= 200:
                branch = _BRANCH.search(via.group(1))
                key = (call_id.group(1).decode(), branch.group(1).decode() if branch else "")
                self.answered.add(key)

    async def close(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self.sock.close()


async def _options_answered(gateway_port: int, serial: int) -> bool:
    loop = asyncio.get_running_loop()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        port = sock.getsockname()[1]
        message = GOOD_OPTIONS.format(port=port, branch=f"probe{serial}").encode()
        for _attempt in range(3):
            sock.sendto(message, ("127.0.0.1", gateway_port))
            try:
                reply = await asyncio.wait_for(loop.sock_recv(sock, 65535), 1.0)
            except TimeoutError:
                continue
            return reply.startswith(b"SIP/2.0 200 ")
    return False


class _TcpPeer:
    """One TCP connection at a time; the gateway closes it on bad framing, we reopen."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.writer: asyncio.StreamWriter | None = None
        self._drain: asyncio.Task[None] | None = None
        self.reconnects = 0

    async def send(self, data: bytes) -> None:
        if self.writer is None or self.writer.is_closing():
            await self.close()
            reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
            self._drain = asyncio.ensure_future(self._read(reader))
            self.reconnects += 1
        self.writer.write(data)
        try:
            await self.writer.drain()
        except OSError:
            await self.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass
        if self.writer is not None:
            self.writer.close()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._drain
            self._drain = None


async def test_mutated_sip_over_udp_and_tcp(demo_gateway: RunningGateway) -> None:
    seed = FUZZ_SEED
    print(f"SIP fuzz seed {seed} (replay: SIPGW_FUZZ_SEED={seed})")
    rng = random.Random(seed)
    corpus = _corpus()
    gateway = demo_gateway.gateway
    port = gateway.sip_port
    loop = asyncio.get_running_loop()
    escaped: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: escaped.append(context))
    problems = _Problems()
    logging.getLogger().addHandler(problems)
    udp = _UdpPeer()
    tcp = _TcpPeer(port)
    expected: dict[tuple[str, str], int] = {}
    sent = 0
    rss_start = 0
    try:
        deadline = loop.time() + FUZZ_SECONDS
        warm_up = loop.time() + min(3.0, FUZZ_SECONDS / 5)
        while loop.time() < deadline:
            data = _mutate(rng, rng.choice(corpus), corpus, sent)
            if rng.random() < 0.8:
                udp.sock.sendto(data, ("127.0.0.1", port))
                key = _invite_key(data)
                if key is not None:
                    expected[key] = sent
            else:
                await tcp.send(data)
            sent += 1
            if sent % 20 == 0:
                await asyncio.sleep(0.005)  # a steady rate the socket buffers hold
            if sent % FUZZ_OPTIONS_EVERY == 0:
                assert await _options_answered(port, sent), f"OPTIONS unanswered, seed {seed}"
                # Followed INVITEs answered by now are done with: the set stays small.
                for done in [key for key in expected if key in udp.answered]:
                    del expected[done]
                udp.answered.clear()
            if not rss_start and loop.time() > warm_up:
                rss_start = _rss()
        async with asyncio.timeout(5):
            while any(key not in udp.answered for key in expected):
                await asyncio.sleep(0.05)
        rss_end = _rss()
    except TimeoutError:
        missing = [key for key in expected if key not in udp.answered]
        pytest.fail(f"{len(missing)} INVITE(s) never answered, e.g. {missing[:3]}; seed {seed}")
    finally:
        await tcp.close()
        await udp.close()
        logging.getLogger().removeHandler(problems)
        loop.set_exception_handler(None)
    context = f"seed {seed}, {sent} messages, {tcp.reconnects} TCP connections"
    assert not escaped, f"exceptions escaped to the loop ({context}): {escaped[:3]}"
    assert not problems.records, f"errors logged ({context}): " + "\n".join(
        problems.format(record) for record in problems.records[:3]
    )
    assert rss_end - rss_start < RSS_SLACK, f"RSS grew {rss_end - rss_start} bytes ({context})"
    assert gateway.ua.transport.bad_messages > 0, context
    # Every transaction and connection ends once the timers have run (64 * T1 = 3.2 s).
    async with asyncio.timeout(15):
        while gateway.ua.tl.active or gateway.ua.transport.connections or gateway.ports.in_use:
            await asyncio.sleep(0.1)
    assert await _options_answered(port, sent), context
