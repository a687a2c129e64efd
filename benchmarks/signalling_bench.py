"""`run.py signalling`: call setups per second through sipgw, without media.

sipgw only originates SIP calls for browsers, so sipp cannot drive it as a B2BUA. Instead
one client process opens M WebSocket sessions at R per second (open loop: it does not wait
for earlier calls), each sends `call` with the same canned SDP offer (made once by aiortc,
whose ICE agent is then closed, so no DTLS or media ever happens), waits for `answer`,
hangs up at once and waits for the gateway's `hangup`. What this measures: per call,
sipgw's WebSocket session, its aiortc answer (certificate, ICE gathering on 127.0.0.1),
an RTP port pair, and a full INVITE/100/180/200/ACK then BYE/200 exchange with sipp.
What it does not: DTLS handshakes or media, and sipp as a SIP client (that path is
inbound calls, which need a page per callee).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import time
import urllib.request
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender, RTCSessionDescription

from benchmarks import procstat
from benchmarks.loadgen.signalling import CallFailed, SipgwSignalling
from benchmarks.loadgen.srtp_tap import IdleTrack, loopback_only
from benchmarks.media_bench import DIAL
from benchmarks.peers import Sipgw, Sipp, SippUac, sipgw_version, workdir


async def canned_offer() -> str:
    loopback_only()
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    sender = pc.addTrack(IdleTrack())
    transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
    transceiver.setCodecPreferences(
        [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/PCMU"]
    )
    await pc.setLocalDescription(await pc.createOffer())
    offer = str(pc.localDescription.sdp)
    await pc.close()
    return offer


async def _one_call(
    http: aiohttp.ClientSession, url: str, offer: str, at: float, out: dict[str, Any]
) -> None:
    await asyncio.sleep(max(0.0, at - time.monotonic()))
    out["start"] = time.monotonic()
    sig = SipgwSignalling(http, url, DIAL)
    try:
        async with asyncio.timeout(30):
            await sig.open()
            sent = time.monotonic()
            await sig.call(offer, timeout=20)
            out["answer_ms"] = (time.monotonic() - sent) * 1000
            await sig.send({"type": "hangup", "id": sig.call_id})
            await sig._expect("hangup", timeout=10)
            out["end"] = time.monotonic()
    except CallFailed as exc:
        # the expected `hangup` after ours arrives as CallFailed from _expect
        if "answer_ms" in out and str(exc).startswith("hangup: 200"):
            out["end"] = time.monotonic()
        else:
            out["error"] = str(exc)[:120]
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        out["error"] = f"{type(exc).__name__}: {exc}"[:120]
    finally:
        with contextlib.suppress(Exception):
            await sig.close()


async def _drive(url: str, rate: float, calls: int) -> list[dict[str, Any]]:
    offer = await canned_offer()
    outcomes: list[dict[str, Any]] = [{} for _ in range(calls)]
    first = time.monotonic() + 0.2
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await asyncio.gather(
            *(_one_call(http, url, offer, first + i / rate, outcomes[i]) for i in range(calls))
        )
    return outcomes


def _gateway_setup_ms(http_port: int) -> dict[str, Any]:
    url = f"http://127.0.0.1:{http_port}/healthz"
    with urllib.request.urlopen(url, timeout=5) as reply:
        health: dict[str, Any] = json.load(reply)
    return health.get("setup_ms", {})


def run_signalling(rate: float, calls: int, keep: bool = False) -> dict[str, Any]:
    import uvloop

    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = procstat.load()
    budget = calls / rate + 120
    with workdir(keep) as wd, Sipp(wd, budget) as sipp, Sipgw(wd, sipp.uri, 64) as gw:
        time.sleep(1.0)
        before = procstat.sample(gw.pid)
        me0 = procstat.sample(os.getpid()).cpu_s
        t0 = time.monotonic()
        outcomes = uvloop.run(_drive(gw.url, rate, calls))
        elapsed = time.monotonic() - t0
        after = procstat.sample(gw.pid)
        me1 = procstat.sample(os.getpid()).cpu_s
        load_during = procstat.load()
        setup_ms = _gateway_setup_ms(gw.http_port)
        time.sleep(1.5)  # sipp writes its statistics once a second
        sipp_stats = sipp.stats()
    done = [o for o in outcomes if "end" in o]
    answers = sorted(o["answer_ms"] for o in outcomes if "answer_ms" in o)
    errors: dict[str, int] = {}
    for o in outcomes:
        if "error" in o:
            errors[o["error"]] = errors.get(o["error"], 0) + 1
    span = (max(o["end"] for o in done) - min(o["start"] for o in done)) if done else 0.0

    def pct(q: float) -> float | None:
        if not answers:
            return None
        value: float = answers[min(len(answers) - 1, math.ceil(q / 100 * len(answers)) - 1)]
        return round(value, 1)

    gw_cpu = after.cpu_s - before.cpu_s
    return {
        "benchmark": "signalling",
        "gateway": "sipgw",
        "rate": rate,
        "calls": calls,
        "started_at": started_at,
        "machine": procstat.machine(),
        "version": sipgw_version(),
        "load_before": load_before,
        "load_during": load_during,
        "completed": len(done),
        "failed": calls - len(done),
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "completed_per_second": len(done) / span if span else 0.0,
        "answer_ms": {"p50": pct(50), "p99": pct(99), "max": pct(100)},
        # The gateway's own share, from its /healthz (last 1000 calls): offer received ->
        # INVITE sent, and 200 OK received -> answer queued for the page.
        "gateway_setup_ms": setup_ms,
        "elapsed_s": elapsed,
        "gateway_cpu_cores": gw_cpu / elapsed,
        "gateway_cpu_s_per_call": gw_cpu / max(1, len(done)),
        "gateway_rss_mb_after": after.rss_bytes / 2**20,
        "client_cpu_cores": (me1 - me0) / elapsed,
        "sipp": sipp_stats,
        "what_it_measures": (__doc__ or "").strip(),
    }


# --- sipp as the caller ------------------------------------------------------------------

SIPP_MODES = ("inbound", "uas")
BENCH_USER = "bench"


async def _canned_answer(offer: str) -> str:
    """A page's answer to the gateway's first offer, reused for every later call: all its
    offers have the same shape (one audio section, mid 0, the same codecs)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    await pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
    pc.addTrack(IdleTrack())
    await pc.setLocalDescription(await pc.createAnswer())
    answer = str(pc.localDescription.sdp)
    await pc.close()
    return answer


async def _answering_page(url: str, ready: asyncio.Event, counts: dict[str, int]) -> None:
    """One page of BENCH_USER that accepts every call at once with the canned answer."""
    loopback_only()
    answer: str | None = None
    async with aiohttp.ClientSession() as http, http.ws_connect(url, max_msg_size=0) as ws:
        await ws.send_json({"type": "hello", "user": BENCH_USER})
        async for msg in ws:
            data = json.loads(msg.data)
            kind = data.get("type")
            counts[kind] = counts.get(kind, 0) + 1
            if kind == "welcome":
                ready.set()
            elif kind == "incoming":
                if answer is None:
                    answer = await _canned_answer(data["sdp"])
                await ws.send_json({"type": "accept", "id": data["id"], "sdp": answer})


async def _drive_sipp(
    mode: str, gw: Sipgw, wd: Any, rate: float, calls: int, hold_ms: int
) -> dict[str, Any]:
    counts: dict[str, int] = {}
    page: asyncio.Task[None] | None = None
    if mode == "inbound":
        target = f"127.0.0.1:{gw.logged_port(rb'SIP on [0-9.]+:([0-9]+)')}"
        service = BENCH_USER
        ready = asyncio.Event()
        page = asyncio.create_task(_answering_page(gw.url, ready, counts))
        await asyncio.wait_for(ready.wait(), 10)
    else:
        target = f"127.0.0.1:{gw.logged_port(rb'demo endpoint on sip:[0-9.]+:([0-9]+)')}"
        service = "600"
    uac = SippUac(wd, target, service)
    before = procstat.sample(gw.pid)
    me0 = procstat.sample(os.getpid()).cpu_s
    t0 = time.monotonic()
    code = await asyncio.to_thread(
        uac.run,
        rate=rate,
        calls=calls,
        limit=max(100, int(rate * 2)),
        hold_ms=hold_ms,
        timeout=calls / rate + 60,
    )
    elapsed = time.monotonic() - t0
    after = procstat.sample(gw.pid)
    me1 = procstat.sample(os.getpid()).cpu_s
    if page is not None:
        page.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await page
    return {
        "sipp_exit": code,
        "sipp": uac.stats(),
        "page_messages": counts,
        "elapsed_s": elapsed,
        "gateway_cpu_s": after.cpu_s - before.cpu_s,
        "gateway_rss_mb_after": after.rss_bytes / 2**20,
        "client_cpu_cores": (me1 - me0) / elapsed,
    }


def run_signalling_sipp(
    mode: str, rate: float, calls: int, hold_ms: int = 0, keep: bool = False
) -> dict[str, Any]:
    """sipp calls the gateway at `rate` per second, `calls` calls, no RTP.

    inbound: sipp -> sipgw's SIP port -> one page of user `bench`, which accepts each call
    at once (the whole B2BUA path of an inbound call: SIP transactions and dialog, the
    browser leg's aiortc offer and answer, an RTP port pair, the page's WebSocket).
    uas: sipp -> the embedded demo endpoint's extension 600 in the same process (SIP
    transactions and dialog and an RTP socket, no browser leg: the SIP stack alone).
    """
    import uvloop

    if mode not in SIPP_MODES:
        raise ValueError(f"mode must be one of {SIPP_MODES}")
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = procstat.load()
    with workdir(keep) as wd, Sipgw(wd, "", 4 * int(rate) + 64) as gw:
        time.sleep(1.0)
        out = uvloop.run(_drive_sipp(mode, gw, wd, rate, calls, hold_ms))
        load_during = procstat.load()
    stats = out["sipp"]
    ok = stats.get("SuccessfulCall(C)", 0)
    failed = stats.get("FailedCall(C)", 0)
    cpu = out["gateway_cpu_s"]
    return {
        "benchmark": "signalling-sipp",
        "mode": mode,
        "gateway": "sipgw",
        "rate": rate,
        "calls": calls,
        "hold_ms": hold_ms,
        "started_at": started_at,
        "machine": procstat.machine(),
        "version": sipgw_version(),
        "load_before": load_before,
        "load_during": load_during,
        "completed": ok,
        "failed": failed + (calls - ok - failed),
        "completed_per_second": ok / out["elapsed_s"] if out["elapsed_s"] else 0.0,
        "gateway_cpu_cores": cpu / out["elapsed_s"],
        "gateway_cpu_s_per_call": cpu / max(1, ok),
        "calls_per_core_second": max(1, ok) / cpu if cpu else None,
        **{k: v for k, v in out.items() if k not in ("gateway_cpu_s",)},
        "what_it_measures": (run_signalling_sipp.__doc__ or "").strip(),
    }
