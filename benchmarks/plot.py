"""Plot CPU and loss against N from the sweep results: docs/benchmarks.png.

python -m benchmarks.plot [--out docs/benchmarks.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

RESULTS = Path(__file__).resolve().parent / "results"
DOCS = Path(__file__).resolve().parent.parent / "docs"
SERIES = (
    ("sweep-sipgw-pcmu.json", "sipgw, G.711 relay", "tab:blue", "o-"),
    ("sweep-janus-pcmu.json", "Janus 1.1.2 SIP plugin, G.711 relay", "tab:orange", "s-"),
    ("sweep-sipgw-opus.json", "sipgw, Opus <-> G.711 transcoding", "tab:green", "^--"),
    ("sweep-sipgw-pinned-pcmu.json", "sipgw on one core (pinned), G.711", "tab:blue", "o:"),
    ("sweep-janus-pinned-pcmu.json", "Janus on one core (pinned), G.711", "tab:orange", "s:"),
    ("sweep-sipgwx2-pcmu.json", "sipgw --workers 2, G.711", "tab:purple", "d-"),
)


def _points(name: str) -> list[dict[str, Any]]:
    path = RESULTS / name
    if not path.is_file():
        return []
    points: list[dict[str, Any]] = json.loads(path.read_text())["points"]
    return sorted(points, key=lambda p: p["calls"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot")
    parser.add_argument("--out", type=Path, default=DOCS / "benchmarks.png")
    args = parser.parse_args(argv)
    fig, (cpu_ax, loss_ax, lat_ax) = plt.subplots(1, 3, figsize=(15, 4.4))
    for name, label, color, style in SERIES:
        points = _points(name)
        if not points:
            continue
        n = [p["calls"] for p in points]
        cpu_ax.plot(
            n, [100 * p["gateway_cpu_cores"] for p in points], style, color=color, label=label
        )
        loss_ax.plot(
            n,
            [100 * (p["loss"] if p["loss"] is not None else 1.0) for p in points],
            style,
            color=color,
            label=label,
        )
        lat_ax.plot(
            n,
            [p["latency_one_way_ms"]["p99"] or 0.0 for p in points],
            style,
            color=color,
            label=label,
        )
    cpu_ax.set_xscale("log", base=2)
    cpu_ax.set_xlabel("concurrent calls N")
    cpu_ax.set_ylabel("gateway CPU, % of one core")
    cpu_ax.set_title("Gateway CPU")
    cpu_ax.grid(True, alpha=0.3)
    cpu_ax.legend(fontsize=8)
    loss_ax.set_xscale("log", base=2)
    loss_ax.set_yscale("symlog", linthresh=0.1)
    loss_ax.set_ylim(bottom=0)
    loss_ax.axhline(0.5, color="grey", linestyle=":", label="0.5 % limit")
    loss_ax.set_xlabel("concurrent calls N")
    loss_ax.set_ylabel("round-trip packet loss, %")
    loss_ax.set_title("Loss (browser -> gateway -> sipp echo -> browser)")
    loss_ax.grid(True, alpha=0.3)
    loss_ax.legend(fontsize=8)
    lat_ax.set_xscale("log", base=2)
    lat_ax.set_yscale("log")
    lat_ax.axhline(40, color="grey", linestyle=":", label="40 ms limit")
    lat_ax.set_xlabel("concurrent calls N")
    lat_ax.set_ylabel("one-way latency p99, ms")
    lat_ax.set_title("Added latency (half the round trip), p99")
    lat_ax.grid(True, alpha=0.3)
    lat_ax.legend(fontsize=8)
    fig.suptitle("sipgw vs Janus on one 2-core machine (load generator on the same box)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
