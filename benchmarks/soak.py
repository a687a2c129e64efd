"""`run.py soak`: many short calls with attacks mixed in; is anything left behind?

One `sipgw run` with sipp as its trunk, and at once, until `calls` calls have been made:
- outbound: pages call the trunk (canned offer, no DTLS), get the answer, hang up at once;
- inbound: sipp calls a page of user `bench` that accepts every call (INVITE..BYE);
- CANCEL races: raw INVITEs (with SDP) to a page of user `ringer`, each CANCELled 0-30 ms
  later (the race that once leaked a port pair and a peer connection per call);
- bad input: malformed SIP datagrams (bad Via, bad Contact, bad version, garbage).

The gateway's RSS, open fds, asyncio tasks, RTP ports in use, SIP transactions and active
calls are sampled every few seconds; the result compares the baseline (after a warm-up) with
the end (after the load, once the transaction timers have run out). A leak shows as a
growth proportional to the number of calls; flat means each call gave back what it took.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import secrets
import socket
import time
import urllib.request
from typing import Any

import aiohttp

from benchmarks import procstat
from benchmarks.loadgen.signalling import CallFailed, SipgwSignalling
from benchmarks.media_bench import DIAL
from benchmarks.peers import Sipgw, Sipp, SippUac, sipgw_version, workdir
from benchmarks.signalling_bench import BENCH_USER, _answering_page, canned_offer

RINGER = "ringer"
# After the load: Timer J / K and the remembered INVITEs last 64*T1 = 32 s.
SETTLE_S = 40.0


def _health(http_port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/healthz", timeout=5) as reply:
        health: dict[str, Any] = json.load(reply)
    return health


def _snapshot(gw: Sipgw) -> dict[str, Any]:
    health = _health(gw.http_port)
    process = health.get("process", {})
    return {
        "t": time.monotonic(),
        "rss_mb": round(procstat.sample(gw.pid).rss_bytes / 2**20, 1),
        "fds": process.get("fds"),
        "tasks": process.get("tasks"),
        "rtp_ports_in_use": health["rtp_ports_in_use"],
        "sip_transactions": health["sip_transactions"],
        "calls_active": health["calls"]["active"],
        "sessions": health["sessions"],
    }


def _invite(port: int, local: int, call_id: str, branch: str) -> tuple[bytes, bytes]:
    sdp = (
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {local + 2} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    common = (
        f"Via: SIP/2.0/UDP 127.0.0.1:{local};branch={branch};rport\r\n"
        f"From: <sip:soak@127.0.0.1>;tag={call_id[:8]}\r\n"
        f"To: <sip:{RINGER}@127.0.0.1:{port}>\r\n"
        f"Call-ID: {call_id}\r\nMax-Forwards: 70\r\n"
    )
    invite = (
        f"INVITE sip:{RINGER}@127.0.0.1:{port} SIP/2.0\r\n{common}CSeq: 1 INVITE\r\n"
        f"Contact: <sip:soak@127.0.0.1:{local}>\r\nContent-Type: application/sdp\r\n"
        f"Content-Length: {len(sdp)}\r\n\r\n"
    ).encode() + sdp
    cancel = (
        f"CANCEL sip:{RINGER}@127.0.0.1:{port} SIP/2.0\r\n{common}CSeq: 1 CANCEL\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode()
    return invite, cancel


BAD = [
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: garbage\r\nFrom: <sip:a@b>;tag=1\r\nTo: <sip:x@c>"
    b"\r\nCall-ID: %s\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n",
    b"INVITE sip:x@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK%s\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: c\r\nCSeq: 1 INVITE\r\n"
    b"Contact: <sip:@@>\r\nContent-Length: 0\r\n\r\n",
    b"OPTIONS sip:x@127.0.0.1 SIP/7.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK%s\r\n"
    b"From: <sip:a@b>;tag=1\r\nTo: <sip:x@c>\r\nCall-ID: c\r\nCSeq: 1 OPTIONS\r\n\r\n",
    b"\x00\xff%s garbage \r\n\r\n",
]


async def _cancel_races(port: int, count: int, rate: float, stats: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.setblocking(False)
    local = sock.getsockname()[1]
    rng = random.Random(7)

    async def drain() -> None:
        while True:
            await loop.sock_recv(sock, 65535)
            stats["responses"] += 1

    reader = asyncio.create_task(drain())
    try:
        for i in range(count):
            call_id = secrets.token_hex(8)
            invite, cancel = _invite(port, local, call_id, "z9hG4bK" + call_id)
            sock.sendto(invite, ("127.0.0.1", port))
            await asyncio.sleep(rng.uniform(0, 0.03))
            sock.sendto(cancel, ("127.0.0.1", port))
            bad = BAD[i % len(BAD)].replace(b"%s", secrets.token_hex(4).encode())
            sock.sendto(bad, ("127.0.0.1", port))
            stats["races"] += 1
            await asyncio.sleep(1 / rate)
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
        sock.close()


async def _ringing_page(url: str, ready: asyncio.Event, counts: dict[str, int]) -> None:
    """A page of RINGER that never answers: every call to it rings until CANCELled."""
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_json({"type": "hello", "user": RINGER})
        async for msg in ws:
            kind = json.loads(msg.data).get("type")
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "welcome":
                ready.set()


async def _outbound(url: str, offer: str, count: int, pages: int, stats: dict[str, int]) -> None:
    """`pages` pages, each placing its share of `count` calls one after the other."""

    async def page(n: int) -> None:
        async with aiohttp.ClientSession() as http:
            for _ in range(n):
                sig = SipgwSignalling(http, url, DIAL)
                try:
                    await sig.open()
                    await sig.call(offer, timeout=20)
                    await sig.send({"type": "hangup", "id": sig.call_id})
                    with contextlib.suppress(CallFailed):
                        await sig._expect("hangup", timeout=10)
                    stats["outbound_ok"] += 1
                except (CallFailed, TimeoutError, aiohttp.ClientError, OSError):
                    stats["outbound_failed"] += 1
                finally:
                    with contextlib.suppress(Exception):
                        await sig.close()

    share, extra = divmod(count, pages)
    await asyncio.gather(*(page(share + (i < extra)) for i in range(pages)))


async def _sampler(gw: Sipgw, samples: list[dict[str, Any]], every: float) -> None:
    while True:
        samples.append(await asyncio.to_thread(_snapshot, gw))
        await asyncio.sleep(every)


async def _drive(gw: Sipgw, wd: Any, calls: int, rate: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    stats = {"races": 0, "responses": 0, "outbound_ok": 0, "outbound_failed": 0}
    ready_bench, ready_ringer = asyncio.Event(), asyncio.Event()
    pages = [
        asyncio.create_task(_answering_page(gw.url, ready_bench, counts)),
        asyncio.create_task(_ringing_page(gw.url, ready_ringer, counts)),
    ]
    await asyncio.wait_for(asyncio.gather(ready_bench.wait(), ready_ringer.wait()), 10)
    offer = await canned_offer()
    sip_port = gw.logged_port(rb"SIP on [0-9.]+:([0-9]+)")
    # A warm-up of each kind, so that caches and pools are at their working size.
    await _outbound(gw.url, offer, 20, 4, stats)
    await _cancel_races(sip_port, 20, 50, stats)
    await asyncio.sleep(SETTLE_S)
    baseline = await asyncio.to_thread(_snapshot, gw)
    samples: list[dict[str, Any]] = []
    sampler = asyncio.create_task(_sampler(gw, samples, 5.0))
    third = calls // 3
    uac = SippUac(wd, f"127.0.0.1:{sip_port}", BENCH_USER)
    t0 = time.monotonic()
    sipp_code, *_ = await asyncio.gather(
        asyncio.to_thread(
            uac.run,
            rate=rate,
            calls=third,
            limit=100,
            hold_ms=0,
            timeout=third / rate + 120,
        ),
        _outbound(gw.url, offer, third, max(1, int(rate // 2)), stats),
        _cancel_races(sip_port, calls - 2 * third, rate, stats),
    )
    load_s = time.monotonic() - t0
    await asyncio.sleep(SETTLE_S)
    end = await asyncio.to_thread(_snapshot, gw)
    sampler.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await sampler
    for task in pages:
        task.cancel()
    await asyncio.gather(*pages, return_exceptions=True)
    return {
        "load_s": round(load_s, 1),
        "baseline": baseline,
        "end": end,
        "peak": {k: max(s[k] or 0 for s in samples) for k in baseline if k != "t"},
        "samples": samples,
        "sipp_exit": sipp_code,
        "sipp_inbound": uac.stats(),
        "driver": stats,
        "page_messages": counts,
    }


def run_soak(calls: int, rate: float, keep: bool = False) -> dict[str, Any]:
    import uvloop

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = procstat.load()
    budget = calls / rate + 600
    with workdir(keep) as wd, Sipp(wd, budget) as sipp, Sipgw(wd, sipp.uri, 200) as gw:
        time.sleep(1.0)
        out = uvloop.run(_drive(gw, wd, calls, rate))
        log_bytes = gw.log.stat().st_size
        tracebacks = gw.log.read_bytes().count(b"Traceback")
    base, end = out["baseline"], out["end"]
    keys = ("rss_mb", "fds", "tasks", "rtp_ports_in_use", "sip_transactions", "calls_active")
    return {
        "benchmark": "soak",
        "calls": calls,
        "rate_per_kind": rate,
        "started_at": started_at,
        "machine": procstat.machine(),
        "version": sipgw_version(),
        "load_before": load_before,
        "growth": {k: (end[k] or 0) - (base[k] or 0) for k in keys},
        "gateway_log_bytes": log_bytes,
        "gateway_log_tracebacks": tracebacks,
        **out,
        "what_it_measures": (__doc__ or "").strip(),
    }
