"""The WebSocket against hostile frames: targeted cases (issue 11, item 10) and a seeded
mutation fuzz of the page's real messages (issue 11, "Same for WebSocket frames").

The fuzz runs SIPGW_WS_FUZZ_SECONDS (default 20) with SIPGW_WS_FUZZ_SEED (default: a new
seed, printed on failure). It fails on any ERROR log record, any call of the loop's
exception handler or any `internal` error, and checks that sessions, calls, dialogs, RTP
ports and transactions are all released, memory stays bounded, and a normal call works
afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import resource
import time
import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.support.gateway import RunningGateway
from tests.support.webrtc_client import WebRtcClient

CORPUS = Path(__file__).parent / "sdp_corpus"
OFFERS = [
    (CORPUS / name).read_text()
    for name in ("chrome_offer_gathered.sdp", "firefox_offer.sdp", "safari_offer.sdp")
]
FUZZ_SECONDS = float(os.environ.get("SIPGW_WS_FUZZ_SECONDS", "20"))


class Watch:
    """ERROR records and loop exception-handler calls while the gateway runs."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def handler(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        # Name the task and the exception, so that a failure says where to look.
        exc = context.get("exception")
        where = "".join(traceback.format_exception(exc)) if exc is not None else ""
        detail = f"{context.get('message')} {context.get('future', '')!r} {where}"
        self.errors.append(f"loop exception handler: {detail}")

    def check(self, caplog: pytest.LogCaptureFixture) -> None:
        records = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        self.errors += [f"{r.name}: {r.getMessage()}" for r in records]
        for error in self.errors[:3]:
            print(error)  # whole, with its traceback: the assertion message is cut short
        assert not self.errors, self.errors[:10]


@contextlib.asynccontextmanager
async def watched(caplog: pytest.LogCaptureFixture) -> AsyncIterator[Watch]:
    watch = Watch()
    loop = asyncio.get_running_loop()
    old = loop.get_exception_handler()
    loop.set_exception_handler(watch.handler)
    caplog.set_level(logging.INFO)
    try:
        yield watch
    finally:
        loop.set_exception_handler(old)
    watch.check(caplog)


async def released(running: RunningGateway, timeout: float = 15.0) -> None:
    gateway = running.gateway
    assert gateway.demo is not None

    def busy() -> dict[str, int]:
        return {
            "sessions": len(gateway.sessions),
            "calls": len(gateway.active_calls()),
            "ports": gateway.ports.in_use,
            "dialogs": gateway.ua.dialog_count,
            "demo dialogs": gateway.demo.ua.dialog_count,
            "transactions": gateway.ua.tl.active,
        }

    deadline = time.monotonic() + timeout
    while any(busy().values()):
        assert time.monotonic() < deadline, f"not released: {busy()}"
        await asyncio.sleep(0.1)


async def normal_call_works(running: RunningGateway) -> None:
    async with WebRtcClient(running.ws_url, tone=1000) as client:
        await client.call("600")
        await client.accept_answer(await client.expect("answer"))
        assert abs(await client.wait_for_tone(1000) - 1000) < 20


# --- targeted hostile frames ------------------------------------------------------------

HOSTILE: list[tuple[str, str]] = [
    ("[" * 100_000, "bad-json"),
    ('{"type": "hello", "x": ' + "[" * 50_000 + "]" * 50_000 + "}", "bad-json"),
    ('{"type": "reject", "id": "x", "code": 1' + "0" * 100_000 + "}", "bad-json"),
    ('{"type": "reject", "id": "x", "code": 1e999999}', "bad-message"),
    ('{"type": "reject", "id": "x", "code": NaN}', "bad-message"),
    ('{"type": "dtmf", "id": "x", "digits": 1e999999}', "bad-message"),
    ('{"type": 1e999999}', "bad-message"),
    ('{"type": "hello", "user": ["alice"]}', "bad-message"),
    ('{"type": "hello", "token": {"a": 1}}', "bad-message"),
    ('{"type": "hello", "token": "' + "t" * 5000 + '"}', "bad-message"),
    ('{"type": "call", "id": 7, "to": "600", "sdp": "v=0"}', "bad-message"),
    ('{"type": "call", "id": "x", "to": null, "sdp": "v=0"}', "bad-message"),
    ('{"type": "call", "id": "x", "to": "600", "sdp": ["v=0"]}', "bad-message"),
    ('{"type": "candidate", "id": "x", "candidate": {"candidate": 5}}', "bad-message"),
    ('{"type": "candidate", "id": "x", "candidate": {"sdpMLineIndex": 1e999}}', "bad-message"),
    ('{"type": "candidate", "id": "x", "candidate": []}', "bad-message"),
    ('{"type": "transfer", "id": "x", "to": {}}', "bad-message"),
    ('{"type": "hold", "id": false}', "bad-message"),
    ('{"type": "accept", "id": "x", "sdp": 0}', "bad-message"),
    ('"just a string"', "bad-message"),
    ('{"type": "call", "id": "\\ud800", "to": "6\\udfff", "sdp": 5}', "bad-message"),
    ('{"type": "hangup", "id": "\\ud800"}', "no-such-call"),
]


async def test_hostile_frames_get_errors_and_the_socket_stays_open(
    demo_gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    async with watched(caplog), WebRtcClient(demo_gateway.ws_url) as client:
        assert client._ws is not None
        for text, code in HOSTILE:
            await client.send_raw(text)
            error = await client.expect("error")
            assert error["code"] == code, (text[:60], error)
            assert len(error["message"]) < 300
        # Binary frames: JSON in them is read like text; anything else is bad-json.
        await client._ws.send_bytes(b'{"type": "hangup", "id": "nope"}')
        assert (await client.expect("error"))["code"] == "no-such-call"
        await client._ws.send_bytes(b"\xff\xfe\x00garbage")
        assert (await client.expect("error"))["code"] == "bad-json"
        assert not client.closed
        await normal_call_works(demo_gateway)
        assert not any("Traceback" in r.getMessage() for r in caplog.records)


async def test_invalid_utf8_and_oversize_frames_close_only_that_socket(
    demo_gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    """RFC 6455 8.1 makes invalid UTF-8 in a text frame fatal for the connection (1007);
    a frame over 512 KiB closes it too (1009). Neither may leave a traceback or a leak."""
    async with watched(caplog):
        for frame, code in ((b'{"type": "\xff"}', 1007), (b"x" * (600 * 1024), 1009)):
            async with aiohttp.ClientSession() as http, http.ws_connect(demo_gateway.ws_url) as ws:
                await ws.send_frame(frame, aiohttp.WSMsgType.TEXT)
                msg = await ws.receive(timeout=5)
                assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED), msg
                assert ws.close_code == code
        await released(demo_gateway)
        await normal_call_works(demo_gateway)


# --- the fuzzer -----------------------------------------------------------------------------

ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    1e308,
    "",
    " ",
    "\u0000",
    "x" * 70_000,
    "600",
    "\u202e\ufeff",
    [],
    {},
    [[[]]],
    {"a": {"b": {}}},
    "sip:600@127.0.0.1",
    "+1900555",
]


def _templates(call_ids: list[str], rng: random.Random) -> list[dict[str, Any]]:
    call_id = rng.choice(call_ids) if call_ids else "c0"
    offer = rng.choice(OFFERS)
    return [
        {"type": "hello"},
        {"type": "hello", "user": "alice", "token": "pw"},
        {"type": "call", "id": f"c{rng.randrange(10**6)}", "to": "600", "sdp": offer},
        {"type": "call", "id": f"c{rng.randrange(10**6)}", "to": "601", "sdp": offer},
        {"type": "accept", "id": call_id, "sdp": offer},
        {"type": "reject", "id": call_id, "code": 486},
        {"type": "hangup", "id": call_id},
        {"type": "dtmf", "id": call_id, "digits": "123#"},
        {"type": "hold", "id": call_id},
        {"type": "unhold", "id": call_id},
        {"type": "transfer", "id": call_id, "to": "601"},
        {
            "type": "candidate",
            "id": call_id,
            "candidate": {
                "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host",
                "sdpMid": "0",
                "sdpMLineIndex": 0,
            },
        },
        {"type": "candidate", "id": call_id, "candidate": None},
    ]


def _mutate_sdp(sdp: str, rng: random.Random) -> str:
    lines = sdp.split("\r\n")
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(len(lines))
        choice = rng.random()
        if choice < 0.3:
            del lines[i]
        elif choice < 0.5:
            lines.insert(i, lines[i])
        elif choice < 0.8:
            words = lines[i].split(" ")
            j = rng.randrange(len(words))
            words[j] = str(rng.choice(ODD_VALUES[3:12]))
            lines[i] = " ".join(words)
        else:
            lines[i] = lines[i][: rng.randrange(len(lines[i]) + 1)]
        if not lines:
            break
    return "\r\n".join(lines)


def _mutate_text(text: str, rng: random.Random) -> str:
    chars = list(text)
    for _ in range(rng.randint(1, 8)):
        if not chars:
            break
        i = rng.randrange(len(chars))
        op = rng.random()
        if op < 0.4:
            chars[i] = rng.choice('{}[]",:\\0e-+.n\u00e9\U0001f600')
        elif op < 0.7:
            del chars[i]
        else:
            chars.insert(i, rng.choice('{}[]",:'))
    return "".join(chars)


def fuzz_message(call_ids: list[str], rng: random.Random) -> str:
    message = dict(rng.choice(_templates(call_ids, rng)))
    roll = rng.random()
    if roll < 0.2:
        return json.dumps(message)  # the real message: keeps calls and ids in play
    if roll < 0.55:
        key = rng.choice([*message, "extra"])
        op = rng.random()
        if op < 0.2 and key != "type":
            message.pop(key, None)
        elif key == "sdp" and op < 0.7 and isinstance(message.get("sdp"), str):
            message["sdp"] = _mutate_sdp(message["sdp"], rng)
        else:
            message[key] = rng.choice(ODD_VALUES)
        return json.dumps(message)
    if roll < 0.65:
        text = json.dumps(message)
        return text[: rng.randrange(len(text))]
    if roll < 0.7:
        depth = rng.choice([10, 999, 5000, 100_000])
        return '{"type": "call", "id": ' + "[" * depth
    return _mutate_text(json.dumps(message), rng)


async def _fuzz_socket(
    url: str, rng: random.Random, until: float, internal: list[str], sent: list[int]
) -> None:
    call_ids: list[str] = []
    while time.monotonic() < until:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            received: list[dict[str, Any]] = []

            async def read(
                ws: aiohttp.ClientWebSocketResponse = ws,
                received: list[dict[str, Any]] = received,
            ) -> None:
                async for msg in ws:
                    if msg.type is aiohttp.WSMsgType.TEXT:
                        received.append(json.loads(msg.data))

            reader = asyncio.create_task(read())
            # A socket lives for a few hundred messages, then closes with its calls up.
            for _ in range(rng.randint(20, 400)):
                if time.monotonic() >= until or ws.closed:
                    break
                for message in received:
                    if message.get("type") == "error" and message.get("code") == "internal":
                        internal.append(str(message))
                    if isinstance(message.get("id"), str):
                        call_ids.append(message["id"])
                received.clear()
                del call_ids[:-20]
                await ws.send_str(fuzz_message(call_ids, rng))
                sent[0] += 1
                await asyncio.sleep(rng.choice([0, 0.001, 0.01, 0.03]))
            await ws.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader


def _rss_mb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize() / 2**20


async def test_websocket_fuzz(
    demo_gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    seed = int(os.environ.get("SIPGW_WS_FUZZ_SEED", random.randrange(2**32)))
    rng = random.Random(seed)
    internal: list[str] = []
    sent = [0]
    # One warm-up call first, so aiortc's and PyAV's one-time allocations are not counted.
    await normal_call_works(demo_gateway)
    await released(demo_gateway)
    rss_before = _rss_mb()
    calls_before = demo_gateway.gateway.calls_total
    async with watched(caplog):
        until = time.monotonic() + FUZZ_SECONDS
        await asyncio.gather(
            *(
                _fuzz_socket(
                    demo_gateway.ws_url, random.Random(rng.random()), until, internal, sent
                )
                for _ in range(4)
            )
        )
        assert not internal, f"seed {seed}: {internal[:5]}"
        calls = demo_gateway.gateway.calls_total - calls_before
        print(f"ws fuzz seed {seed}: {sent[0]} messages, {calls} calls placed")
        await released(demo_gateway, timeout=20)
        growth = _rss_mb() - rss_before
        await normal_call_works(demo_gateway)
        await released(demo_gateway)
    assert sent[0] > 100 * FUZZ_SECONDS / 20, f"only {sent[0]} messages sent"
    assert calls > 5, f"the fuzz placed only {calls} calls: it must reach the call code"
    # Bounded: nothing the fuzz opened stays; allocator slack is all that may remain.
    assert growth < 150, f"seed {seed}: RSS grew {growth:.0f} MB over {sent[0]} messages"
