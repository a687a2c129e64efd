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
import math
import os
import time
from typing import Any

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCRtpSender

from benchmarks import procstat
from benchmarks.loadgen.signalling import CallFailed, SipgwSignalling
from benchmarks.loadgen.srtp_tap import IdleTrack, loopback_only
from benchmarks.media_bench import DIAL
from benchmarks.peers import Sipgw, Sipp, sipgw_version, workdir


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
        "elapsed_s": elapsed,
        "gateway_cpu_cores": gw_cpu / elapsed,
        "gateway_cpu_s_per_call": gw_cpu / max(1, len(done)),
        "gateway_rss_mb_after": after.rss_bytes / 2**20,
        "client_cpu_cores": (me1 - me0) / elapsed,
        "sipp": sipp_stats,
        "what_it_measures": (__doc__ or "").strip(),
    }
