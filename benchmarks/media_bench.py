"""`run.py media`: N calls with audio through sipgw or Janus to an echoing sipp."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import queue
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median
from typing import Any

from benchmarks import procstat, profile
from benchmarks.loadgen.signalling import GatewayKind
from benchmarks.loadgen.stats import Histogram
from benchmarks.loadgen.worker import Codec, Timeline, WorkerPlan, worker_main
from benchmarks.peers import Janus, Sipgw, Sipp, janus_version, sipgw_version, workdir

MAX_LOSS = 0.005
MAX_P99_MS = 40.0
DIAL = "1000"  # any number: sipgw sends every call to its trunk


@dataclass(frozen=True)
class MediaOptions:
    gateway: GatewayKind
    calls: int
    seconds: float = 30.0
    codec: Codec = "pcmu"
    rate: float = 20.0  # call setups per second during the ramp
    workers: int = 0  # 0: one per 60 calls, at most 4
    settle: float = 3.0  # after the ramp, before the window opens
    profile: bool = False  # py-spy the gateway during the window (sipgw only)
    keep: bool = False  # keep the work directory (logs, configs)
    quiet_wait: float = 0.0  # seconds to wait at most for a quiet machine first
    sipgw_checkout: Path | None = None  # another checkout of sipgw (e.g. a git worktree)
    sipgw_workers: int = 1  # sipgw run --workers: gateway processes sharing the load
    # The gateway on CPU 1 only, the generator, sipp and this runner on CPU 0: the gateway's
    # capacity on one core, without the generator competing for it.
    pin: bool = False
    max_p99_ms: float = MAX_P99_MS  # the pass criterion's latency bound


def _percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1)]


def _sleep_until(at_ns: int) -> None:
    delay = at_ns - time.monotonic_ns()
    if delay > 0:
        time.sleep(delay / 1e9)


def run_media(opts: MediaOptions) -> dict[str, Any]:
    if opts.gateway == "janus" and opts.codec != "pcmu":
        raise ValueError("Janus does not transcode: only --codec pcmu")
    workers = opts.workers or min(4, max(1, math.ceil(opts.calls / 60)))
    ramp_s = opts.calls / opts.rate
    budget = ramp_s + opts.settle + opts.seconds + 120
    quiet = procstat.wait_quiet(opts.quiet_wait) if opts.quiet_wait > 0 else None
    started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    load_before = {**procstat.load(), "wait": quiet}
    own_cpus = os.sched_getaffinity(0)
    gateway_cpus = None
    if opts.pin:
        # Set before sipp and the generator start: they inherit it.
        os.sched_setaffinity(0, {0})
        gateway_cpus = {1}
    try:
        return _run_media(
            opts, budget, ramp_s, workers, quiet, started_at, load_before, gateway_cpus
        )
    finally:
        os.sched_setaffinity(0, own_cpus)


def _run_media(
    opts: MediaOptions,
    budget: float,
    ramp_s: float,
    workers: int,
    quiet: Any,
    started_at: str,
    load_before: dict[str, Any],
    gateway_cpus: set[int] | None,
) -> dict[str, Any]:
    with workdir(opts.keep) as wd, Sipp(wd, budget) as sipp:
        peer: Sipgw | Janus
        if opts.gateway == "sipgw":
            peer = Sipgw(
                wd, sipp.uri, opts.calls, opts.sipgw_checkout, opts.sipgw_workers, gateway_cpus
            )
            target = DIAL
        else:
            peer = Janus(wd, opts.calls, gateway_cpus)
            target = sipp.uri
        with peer:
            time.sleep(1.0)
            idle = procstat.sample(peer.pid)
            ctx = mp.get_context("spawn")
            results: Any = ctx.Queue()
            plans = [
                WorkerPlan(
                    worker=w,
                    kind=opts.gateway,
                    url=peer.url,
                    target=target,
                    codec=opts.codec,
                    calls=tuple(range(w, opts.calls, workers)),
                    rate=opts.rate,
                )
                for w in range(workers)
            ]
            pipes = []
            procs = []
            for plan in plans:
                parent_end, child_end = ctx.Pipe()
                proc = ctx.Process(target=worker_main, args=(plan, child_end, results), daemon=True)
                proc.start()
                pipes.append(parent_end)
                procs.append(proc)
            ready = 0
            while ready < workers:
                kind, _, _ = results.get(timeout=60)
                ready += kind == "ready"
            t0 = time.monotonic_ns() + 500_000_000
            window_start = t0 + int((ramp_s + opts.settle) * 1e9)
            window_end = window_start + int(opts.seconds * 1e9)
            timeline = Timeline(t0, window_start, window_end, window_end + 1_000_000_000)
            for pipe in pipes:
                pipe.send(timeline)
            _sleep_until(window_start)
            gw0 = procstat.sample(peer.pid)
            sipp0 = procstat.sample(sipp.proc.pid if sipp.proc else 0)
            gen0 = sum(procstat.sample(p.pid or 0).cpu_s for p in procs)
            busy0 = procstat.busy_cpu_s()
            spy: subprocess.Popen[bytes] | None = None
            spy_out = wd / "pyspy.txt"
            if opts.profile and opts.gateway == "sipgw":
                spy = profile.start(peer.pid, opts.seconds, spy_out)
            _sleep_until(window_end)
            gw1 = procstat.sample(peer.pid)
            sipp1 = procstat.sample(sipp.proc.pid if sipp.proc else 0)
            gen1 = sum(procstat.sample(p.pid or 0).cpu_s for p in procs)
            busy1 = procstat.busy_cpu_s()
            ours = (gw1.cpu_s - gw0.cpu_s) + (sipp1.cpu_s - sipp0.cpu_s) + (gen1 - gen0)
            load_during = {
                **procstat.load(),
                # CPU used by everything but the gateway, sipp and the load generator.
                "other_cpu_cores": round((busy1 - busy0 - ours) / opts.seconds, 3),
            }
            worker_results: list[dict[str, Any]] = []
            deadline = time.monotonic() + 60
            while len(worker_results) < workers and time.monotonic() < deadline:
                try:
                    kind, _, payload = results.get(timeout=1)
                except queue.Empty:
                    continue
                if kind == "result":
                    worker_results.append(payload)
            for proc in procs:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
            hot = profile.finish(spy, spy_out) if spy is not None else None
            sipp_stats = sipp.stats()
    return _summarise(
        opts,
        workers,
        started_at,
        load_before,
        load_during,
        idle,
        gw0,
        gw1,
        sipp1.cpu_s - sipp0.cpu_s,
        gen1 - gen0,
        worker_results,
        sipp_stats,
        hot,
    )


def _summarise(
    opts: MediaOptions,
    workers: int,
    started_at: str,
    load_before: dict[str, object],
    load_during: dict[str, object],
    idle: procstat.Sample,
    gw0: procstat.Sample,
    gw1: procstat.Sample,
    sipp_cpu: float,
    gen_cpu: float,
    worker_results: list[dict[str, Any]],
    sipp_stats: dict[str, int],
    hot: dict[str, Any] | None,
) -> dict[str, Any]:
    calls = [c for w in worker_results for c in w["calls"]]
    hist = Histogram()
    for w in worker_results:
        hist.merge(w["histogram"])
    ok = [c for c in calls if c["error"] is None and c["connect_ms"] is not None]
    failed = len(calls) - len(ok) + (opts.calls - len(calls))
    sent = sum(c["sent"] for c in ok)
    received = sum(c["received"] for c in ok)
    late = sum(c["late"] for c in ok)
    loss = 1 - received / sent if sent else None
    per_call_loss = [1 - c["received"] / c["sent"] for c in ok if c["sent"]]
    gw_cores = (gw1.cpu_s - gw0.cpu_s) / opts.seconds
    live = max(1, len(ok))
    p99 = hist.percentile_ms(99)
    passed = (
        loss is not None
        and loss < MAX_LOSS
        and p99 is not None
        and p99 <= opts.max_p99_ms
        and failed <= MAX_LOSS * opts.calls
    )
    errors: dict[str, int] = {}
    for c in calls:
        if c["error"]:
            errors[c["error"]] = errors.get(c["error"], 0) + 1
    setup = [c["setup_ms"] for c in calls if c["setup_ms"] is not None]
    connect = [c["connect_ms"] for c in calls if c["connect_ms"] is not None]
    return {
        "benchmark": "media",
        "gateway": opts.gateway,
        "sipgw_workers": opts.sipgw_workers if opts.gateway == "sipgw" else None,
        # Gateway on CPU 1; generator, sipp and runner on CPU 0.
        "pinned": opts.pin,
        "codec": opts.codec,
        "calls": opts.calls,
        "seconds": opts.seconds,
        "rate": opts.rate,
        "workers": workers,
        "started_at": started_at,
        "machine": procstat.machine(),
        "version": (
            sipgw_version(opts.sipgw_checkout) if opts.gateway == "sipgw" else janus_version()
        ),
        "load_before": load_before,
        "load_during": load_during,
        "calls_connected": len(ok),
        "calls_failed": failed,
        "errors": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
        "packets_sent": sent,
        "packets_received": received,
        "loss": loss,
        "late": late / sent if sent else None,
        "per_call_loss_max": max(per_call_loss, default=None),
        "calls_with_no_audio": sum(1 for c in ok if c["sent"] and not c["received"]),
        "decrypt_errors": sum(c["decrypt_errors"] for c in ok),
        "latency_one_way_ms": {
            "p50": hist.percentile_ms(50),
            "p99": p99,
            "max": hist.percentile_ms(100),
            "samples": hist.total(),
        },
        "setup_ms": {"p50": _percentile(setup, 50), "p99": _percentile(setup, 99)},
        "connect_ms": {"p50": _percentile(connect, 50), "p99": _percentile(connect, 99)},
        "gateway_cpu_cores": gw_cores,
        "gateway_cpu_per_call": gw_cores / live,
        "gateway_rss_idle_mb": idle.rss_bytes / 2**20,
        "gateway_rss_mb": gw1.rss_bytes / 2**20,
        # RSS when the measuring window opened: with a long --seconds, start vs end shows
        # whether memory grows while the same calls go on (a per-packet leak).
        "gateway_rss_window_start_mb": gw0.rss_bytes / 2**20,
        "gateway_rss_per_call_mb": (gw1.rss_bytes - idle.rss_bytes) / 2**20 / live,
        "gateway_threads": gw1.threads,
        "generator_cpu_cores": gen_cpu / opts.seconds,
        "generator_cpu_per_call": gen_cpu / opts.seconds / live,
        "generator_cpu_self_reported_cores": sum(w["cpu_window_s"] or 0.0 for w in worker_results)
        / opts.seconds,
        "sipp_cpu_cores": sipp_cpu / opts.seconds,
        "sipp": sipp_stats,
        "setup_ms_median": median(setup) if setup else None,
        "passed": passed,
        "criterion": f"loss < {MAX_LOSS:.1%}, p99 one-way <= {opts.max_p99_ms:g} ms, "
        f"failed calls <= {MAX_LOSS:.1%}",
        "profile": hot,
    }


def default_out(result: dict[str, Any]) -> Path:
    name = f"media-{result['gateway']}{_workers_tag(result)}-{result['codec']}-{result['calls']}"
    return Path(__file__).resolve().parent / "results" / f"{name}.json"


def _workers_tag(result: dict[str, Any]) -> str:
    workers = result.get("sipgw_workers") or 1
    return (f"x{workers}" if workers > 1 else "") + ("-pinned" if result.get("pinned") else "")
