"""py-spy on the gateway during the measurement window, summarised to a few lines."""

from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any


def start(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes] | None:
    if shutil.which("py-spy") is None:
        return None
    return subprocess.Popen(
        [
            "py-spy",
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "50",
            "--format",
            "raw",
            "--nonblocking",
            "--output",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def finish(proc: subprocess.Popen[bytes], out: Path, top: int = 20) -> dict[str, Any] | None:
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        return None
    try:
        return summarise(out.read_text(), top)
    except OSError:
        return None


def summarise(raw: str, top: int = 20) -> dict[str, Any]:
    """Self time by leaf frame, and inclusive time by file, from py-spy's collapsed stacks."""
    leaf: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        leaf[_short(frames[-1])] += count
        for name in {_file_of(f) for f in frames}:
            inclusive[name] += count
    if not total:
        return {"samples": 0}
    return {
        "samples": total,
        "self": [[name, round(100 * n / total, 1)] for name, n in leaf.most_common(top)],
        "inclusive_by_file": [
            [name, round(100 * n / total, 1)] for name, n in inclusive.most_common(top)
        ],
    }


def _short(frame: str) -> str:
    # "function (path/to/file.py:123)" -> "function (file.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name} ({'/'.join(path.split('/')[-2:])})"


def _file_of(frame: str) -> str:
    where = frame.partition(" (")[2].rstrip(")").rsplit(":", 1)[0]
    parts = where.split("/")
    if "site-packages" in parts:
        return parts[parts.index("site-packages") + 1]
    return "/".join(parts[-2:])
