"""`sipgw run --workers N`: a supervisor process and N gateway workers, one per core.

Python runs one thread of bytecode per process, and a relayed call costs the same CPU
whichever thread carries it, so a machine's cores are used by processes. Each worker is a
whole gateway with its own SIP port (the configured one plus 2 x its index, leaving
port + 1 for TLS), its own slice of the RTP range and its own demo endpoint; they share
the HTTP port through SO_REUSEPORT, and gateway/cluster/ relays signalling between a
page in one worker and a call in another. Only the first worker registers accounts, so
inbound calls arrive at the configured SIP port, and any worker may place calls.

The supervisor only starts, watches and stops them: if one worker dies the others are
stopped and `sipgw` exits non-zero, for systemd (or whatever runs it) to restart it whole,
rather than carrying on with the pages of one worker gone.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import shutil
import signal
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from gateway import runtime
from gateway.cluster import WorkerSpec
from gateway.config import Config, ConfigError

log = logging.getLogger("sipgw")

START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


@dataclass(frozen=True)
class Ready:
    index: int
    sip_port: int
    tls_port: int


def worker_config(config: Config, index: int, count: int) -> Config:
    """Worker `index` of `count`: its SIP port and its slice of the RTP range."""
    span = (config.rtp_port_max - config.rtp_port_min + 1) // count
    span -= span % 2
    if span < 4:
        raise ConfigError(
            f"media.rtp_port_min/max: {count} workers need at least {4 * count} RTP ports"
        )
    low = config.rtp_port_min + index * span
    high = config.rtp_port_max if index == count - 1 else low + span - 1
    sip_port = config.sip_port + 2 * index if config.sip_port else 0
    if sip_port > 65534:
        raise ConfigError(f"sip.port {config.sip_port} leaves no room for {count} workers")
    return replace(config, sip_port=sip_port, rtp_port_min=low, rtp_port_max=high)


def check(config: Config) -> None:
    if config.workers == 1:
        return
    for index in range(config.workers):
        worker_config(config, index, config.workers)


def _worker_main(config: Config, spec: WorkerSpec, ready: Any, verbosity: int) -> None:
    runtime.configure_logging(verbosity, tag=f"w{spec.index + 1}")

    def report(sip_port: int, tls_port: int) -> None:
        ready.put(Ready(spec.index, sip_port, tls_port))

    code = runtime.run_serve(worker_config(config, spec.index, spec.count), spec, report)
    raise SystemExit(code)


def supervise(config: Config, verbosity: int, announce: Any) -> int:
    """Start the workers, report once all are ready, and stop them all on a signal or when
    any of them exits."""
    count = config.workers
    directory = Path(tempfile.mkdtemp(prefix="sipgw-workers-"))
    # spawn, not fork: numpy's, PyAV's and uvloop's threads and state are not fork-safe.
    context = multiprocessing.get_context("spawn")
    ready = context.Queue()
    stopping: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        stopping.append(signum)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    processes = [
        context.Process(
            target=_worker_main,
            args=(config, WorkerSpec(i, count, directory), ready, verbosity),
            name=f"sipgw-worker-{i + 1}",
        )
        for i in range(count)
    ]
    failed = False
    try:
        for process in processes:
            process.start()
        reports = _await_ready(processes, ready, stopping)
        failed = reports is None
        if reports is not None and not stopping:
            announce([reports[i] for i in range(count)])
        if not failed and not stopping:
            failed = _watch(processes, stopping)
    finally:
        _stop_all(processes)
        ready.close()
        shutil.rmtree(directory, ignore_errors=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    return 1 if failed else 0


def _await_ready(processes: list[Any], ready: Any, stopping: list[int]) -> dict[int, Ready] | None:
    """Every worker's Ready report by index (fewer if a signal came first), or None when a
    worker died or did not report in time."""
    reports: dict[int, Ready] = {}
    deadline = time.monotonic() + START_TIMEOUT
    while len(reports) < len(processes) and not stopping:
        if any(not p.is_alive() for p in processes) or time.monotonic() > deadline:
            log.error("a worker did not start; stopping")
            return None
        try:
            report: Ready = ready.get(timeout=0.2)
        except queue.Empty:
            continue
        reports[report.index] = report
    return reports


def _watch(processes: list[Any], stopping: list[int]) -> bool:
    """Wait for a signal (False) or for a worker to exit (True: a failure)."""
    while not stopping:
        dead = [p for p in processes if not p.is_alive()]
        if dead:
            log.error("%s exited with %s; stopping the others", dead[0].name, dead[0].exitcode)
            return True
        time.sleep(0.2)
    return False


def _stop_all(processes: list[Any]) -> None:
    """SIGTERM every live worker, then kill those still running after STOP_TIMEOUT."""
    for process in processes:
        if process.pid is not None and process.is_alive():
            os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in processes:
        if process.pid is None:
            continue
        process.join(max(0.1, deadline - time.monotonic()))
        if process.is_alive():
            log.error("%s did not stop in %.0f s: killed", process.name, STOP_TIMEOUT)
            process.kill()
            process.join()
