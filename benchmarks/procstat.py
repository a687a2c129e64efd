"""CPU time and resident memory of a process and its children (psutil)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import psutil  # type: ignore[import-untyped]


@dataclass(frozen=True)
class Sample:
    cpu_s: float  # user + system, whole tree, since start
    rss_bytes: int
    threads: int


def sample(pid: int) -> Sample:
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return Sample(0.0, 0, 0)
    cpu = 0.0
    rss = 0
    threads = 0
    for proc in procs:
        try:
            with proc.oneshot():
                times = proc.cpu_times()
                cpu += times.user + times.system
                rss += proc.memory_info().rss
                threads += proc.num_threads()
        except psutil.Error:
            continue
    return Sample(cpu, rss, threads)


def busy_cpu_s() -> float:
    """Non-idle CPU seconds of the whole machine since boot (all cores)."""
    t = psutil.cpu_times()
    return float(t.user + t.nice + t.system + t.irq + t.softirq + getattr(t, "steal", 0.0))


def pytest_running() -> bool:
    return bool(load()["pytest_pids"])


def wait_quiet(max_wait_s: float, busy_cores: float = 0.25) -> dict[str, object]:
    """Wait (at most `max_wait_s`) until no pytest runs and the machine is nearly idle
    (under `busy_cores` over 3 s). Other engineers test on this machine too."""
    started = time.monotonic()
    while True:
        before = busy_cpu_s()
        time.sleep(3.0)
        busy = (busy_cpu_s() - before) / 3.0
        quiet = busy < busy_cores and not pytest_running()
        waited = time.monotonic() - started
        if quiet or waited >= max_wait_s:
            return {"quiet": quiet, "waited_s": round(waited, 1), "busy_cores": round(busy, 2)}


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in open("/proc/cpuinfo", encoding="ascii", errors="replace"):
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def load() -> dict[str, object]:
    """What else is running: load average and whether a pytest run is under way."""
    one, five, fifteen = os.getloadavg()
    pytest = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info.get("cmdline") or [])
        if "pytest" in cmd and proc.info["pid"] != os.getpid():
            pytest.append(proc.info["pid"])
    return {"loadavg": [one, five, fifteen], "pytest_pids": pytest}
