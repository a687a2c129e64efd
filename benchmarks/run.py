"""Benchmarks of sipgw against Janus 1.1.2's SIP plugin on this machine.

    python -m benchmarks.run media --gateway sipgw --calls 40 --seconds 30 --codec pcmu
    python -m benchmarks.run sweep --gateway janus --max-minutes 20
    python -m benchmarks.run signalling --rate 20 --calls 400
    python -m benchmarks.plot

Run from the repository root. Results go to benchmarks/results/*.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.media_bench import MediaOptions, default_out, run_media

RESULTS = Path(__file__).resolve().parent / "results"


def _write(result: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1, sort_keys=False) + "\n")
    print(f"wrote {path}", file=sys.stderr)


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _tag(r: dict[str, Any]) -> str:
    workers = r.get("sipgw_workers") or 1
    return f"x{workers}" if workers > 1 else ""


def _line(r: dict[str, Any]) -> str:
    lat = r["latency_one_way_ms"]
    return (
        f"{r['gateway'] + _tag(r):7} {r['codec']:4} N={r['calls']:4} ok={r['calls_connected']:4} "
        f"cpu={100 * r['gateway_cpu_cores']:5.1f}% ({100 * r['gateway_cpu_per_call']:.2f}%/call) "
        f"rss/call={r['gateway_rss_per_call_mb']:.2f}MB loss={fmt(r['loss'], '.3%')} "
        f"late={fmt(r['late'], '.3%')} p50={fmt(lat['p50'], '.1f')}ms "
        f"p99={fmt(lat['p99'], '.1f')}ms setup p50={fmt(r['setup_ms']['p50'], '.0f')}ms "
        f"gen={100 * r['generator_cpu_per_call']:.2f}%/call "
        f"load={r['load_during']['loadavg'][0]:.2f} "
        f"others={r['load_during']['other_cpu_cores']:.2f} cores "
        f"{'PASS' if r['passed'] else 'FAIL'}"
    )


def _media_options(args: argparse.Namespace, calls: int) -> MediaOptions:
    return MediaOptions(
        gateway=args.gateway,
        calls=calls,
        seconds=args.seconds,
        codec=args.codec,
        rate=args.rate,
        workers=args.workers,
        profile=args.profile,
        keep=args.keep,
        quiet_wait=args.quiet_wait,
        sipgw_checkout=Path(args.sipgw_checkout) if args.sipgw_checkout else None,
        sipgw_workers=args.sipgw_workers,
        pin=args.pin,
        max_p99_ms=args.max_p99,
    )


def cmd_media(args: argparse.Namespace) -> int:
    result = run_media(_media_options(args, args.calls))
    result["command"] = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    print(_line(result))
    _write(result, Path(args.out) if args.out else default_out(result))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """N = start, 2*start, ... while the previous point passed and time is left; then one
    step halfway between the last pass and the first failure."""
    deadline = time.monotonic() + args.max_minutes * 60
    points: list[dict[str, Any]] = []
    n = args.start
    best: int | None = None
    worst: int | None = None

    def point(calls: int) -> dict[str, Any]:
        result = run_media(_media_options(args, calls))
        print(_line(result), flush=True)
        if not result["passed"] and result["load_during"]["other_cpu_cores"] > args.retry_busy:
            # Other work on the machine may have caused the failure: measure once more.
            result = run_media(_media_options(args, calls))
            result["retried_because_other_cpu"] = True
            print(_line(result), flush=True)
        points.append(result)
        return result

    while n <= args.max_calls and time.monotonic() < deadline:
        if point(n)["passed"]:
            best = n
            n *= 2
        else:
            worst = n
            break
    # Bisect between the last pass and the first failure down to --resolution calls.
    while (
        best is not None
        and worst is not None
        and worst - best > args.resolution
        and time.monotonic() < deadline
    ):
        middle = (best + worst) // 2
        if point(middle)["passed"]:
            best = middle
        else:
            worst = middle
    sweep = {
        "benchmark": "sweep",
        "gateway": args.gateway,
        "sipgw_workers": args.sipgw_workers,
        "pinned": args.pin,
        "codec": args.codec,
        "seconds": args.seconds,
        "command": " ".join(["python -m benchmarks.run", *sys.argv[1:]]),
        "max_calls_passing": best,
        "first_failing": worst,
        "criterion": points[0]["criterion"] if points else None,
        "points": [{k: v for k, v in p.items() if k != "profile"} for p in points],
    }
    name = args.gateway + (f"x{args.sipgw_workers}" if args.sipgw_workers > 1 else "")
    name += "-pinned" if args.pin else ""
    name += f"-p99-{args.max_p99:g}ms" if args.max_p99 != 40.0 else ""
    out = Path(args.out) if args.out else RESULTS / f"sweep-{name}-{args.codec}.json"
    sweep["version"] = points[0]["version"] if points else None
    _write(sweep, out)
    print(f"largest N passing: {best} (first failing: {worst})")
    return 0


def cmd_signalling(args: argparse.Namespace) -> int:
    from benchmarks.signalling_bench import run_signalling, run_signalling_sipp

    if args.sipp:
        result = run_signalling_sipp(args.sipp, args.rate, args.calls, args.hold_ms, args.keep)
        result["command"] = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
        print(
            f"signalling ({args.sipp}, sipp): rate {args.rate}/s, {result['completed']}/"
            f"{args.calls} completed, {result['completed_per_second']:.1f} calls/s, failures "
            f"{result['failed']}, gateway cpu {100 * result['gateway_cpu_cores']:.0f}% "
            f"({1000 * result['gateway_cpu_s_per_call']:.2f} ms/call)"
        )
        name = f"signalling-sipp-{args.sipp}-{args.rate:g}.json"
        _write(result, Path(args.out) if args.out else RESULTS / name)
        return 0

    result = run_signalling(rate=args.rate, calls=args.calls, keep=args.keep)
    result["command"] = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    print(
        f"signalling: rate {args.rate}/s, {result['completed']}/{args.calls} completed, "
        f"{result['completed_per_second']:.1f} calls/s, failures {result['failed']}, "
        f"answer p50 {result['answer_ms']['p50']} ms p99 {result['answer_ms']['p99']} ms, "
        f"gateway cpu {100 * result['gateway_cpu_cores']:.0f}% "
        f"({1000 * result['gateway_cpu_s_per_call']:.1f} ms/call), gateway's share "
        f"{result['gateway_setup_ms']}"
    )
    out = Path(args.out) if args.out else RESULTS / f"signalling-{args.rate:g}.json"
    _write(result, out)
    return 0


def cmd_soak(args: argparse.Namespace) -> int:
    from benchmarks.soak import run_soak

    result = run_soak(args.calls, args.rate, args.keep)
    result["command"] = " ".join(["python -m benchmarks.run", *sys.argv[1:]])
    growth = result["growth"]
    print(
        f"soak: {args.calls} calls in {result['load_s']} s, growth baseline -> end: "
        + ", ".join(f"{k} {v:+g}" for k, v in growth.items())
        + f"; peak {result['peak']}; tracebacks in log {result['gateway_log_tracebacks']}"
    )
    _write(result, Path(args.out) if args.out else RESULTS / f"soak-{args.calls}.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def media_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--gateway", choices=("sipgw", "janus"), default="sipgw")
        p.add_argument("--codec", choices=("pcmu", "opus"), default="pcmu")
        p.add_argument("--seconds", type=float, default=30.0, help="measurement window")
        p.add_argument("--rate", type=float, default=20.0, help="call setups per second")
        p.add_argument("--workers", type=int, default=0, help="load processes (0: auto)")
        p.add_argument(
            "--pin",
            action="store_true",
            help="gateway on CPU 1 only; generator, sipp and runner on CPU 0",
        )
        p.add_argument(
            "--max-p99", type=float, default=40.0, help="pass: p99 one-way latency <= this (ms)"
        )
        p.add_argument(
            "--sipgw-workers", type=int, default=1, help="sipgw run --workers (gateway processes)"
        )
        p.add_argument("--profile", action="store_true", help="py-spy the gateway")
        p.add_argument("--keep", action="store_true", help="keep logs in /tmp/sipgw-bench-*")
        p.add_argument("--out", help="result file (default under benchmarks/results/)")
        p.add_argument(
            "--quiet-wait",
            type=float,
            default=0.0,
            help="wait up to this many seconds for a quiet machine before each run",
        )
        p.add_argument(
            "--sipgw-checkout",
            help="run sipgw from this directory (e.g. a git worktree of another commit)",
        )

    media = sub.add_parser("media", help="N concurrent calls with audio for T seconds")
    media_args(media)
    media.add_argument("--calls", type=int, default=10)
    media.set_defaults(func=cmd_media)

    sweep = sub.add_parser("sweep", help="largest N with loss < 0.5%% and p99 <= 40 ms")
    media_args(sweep)
    sweep.add_argument("--start", type=int, default=10)
    sweep.add_argument("--max-calls", type=int, default=640)
    sweep.add_argument("--max-minutes", type=float, default=20.0)
    sweep.add_argument(
        "--resolution", type=int, default=80, help="bisect until pass and fail are this close"
    )
    sweep.add_argument(
        "--retry-busy",
        type=float,
        default=0.2,
        help="re-run a failing point once if other processes used more cores than this",
    )
    sweep.set_defaults(func=cmd_sweep)

    sig = sub.add_parser("signalling", help="call setups per second, no media")
    sig.add_argument("--rate", type=float, default=20.0, help="calls started per second")
    sig.add_argument("--calls", type=int, default=200)
    sig.add_argument(
        "--sipp",
        choices=("inbound", "uas"),
        help="sipp places the calls: to a page through sipgw (inbound) or to its demo UAS",
    )
    sig.add_argument("--hold-ms", type=int, default=0, help="with --sipp: time in each call")
    sig.add_argument("--keep", action="store_true")
    sig.add_argument("--out")
    sig.set_defaults(func=cmd_signalling)

    soak = sub.add_parser("soak", help="short calls, CANCEL races and bad input; leaks?")
    soak.add_argument("--calls", type=int, default=10_000)
    soak.add_argument("--rate", type=float, default=20.0, help="calls/s of each of 3 kinds")
    soak.add_argument("--keep", action="store_true")
    soak.add_argument("--out")
    soak.set_defaults(func=cmd_soak)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
