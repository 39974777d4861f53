"""`python3 -m bench <workload>`: run benchmarks, print a table, write results.json and results.png.

    python3 -m bench all [--quick] [--out DIR] [--profile]
    python3 -m bench relay | latency | capacity | raw_relay
    python3 -m bench crypto | ratelimit | history_read | group_fanout | catch_up | reconnect_storm | cluster

`all` runs the relay, latency and capacity workloads (each against the raw relay
bound where it applies) and then the component benchmarks (`bench.crypto`,
`bench.ratelimit`, `bench.history_read`, `bench.group_fanout`) with small sizes, and
finishes in well under ten minutes on a 2-core machine; a component named on its own
runs at its full default sizes. `--quick` shrinks everything to seconds (the
smoke test uses it). Results go to `bench/results/<timestamp>/` unless `--out` says
otherwise. Numbers are reported against the targets, never asserted, and judged only
when the run had the sizes a target is stated for (so not with `--quick`). Without
matplotlib (the bench extra) the results are written without the plot.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import time
from datetime import datetime
from pathlib import Path
from collections.abc import Callable
from typing import Any

from spartan.setup_hint import missing_package  # standard library only: works before set-up

try:
    from bench import capacity, latency, relay, report
    from bench.stack import ROOT, raise_open_files_limit
except ModuleNotFoundError as missing:  # not set up: one sentence that names the command, no traceback
    sys.exit(missing_package(missing.name or "?", ["-m", "bench", *sys.argv[1:]]))

WORKLOADS = ("relay", "latency", "capacity", "raw_relay")
COMPONENTS: dict[str, dict[str, list[str]]] = {  # component benchmarks: arguments within `all` / with --quick
    "crypto": {"all": ["--seconds", "0.2"], "quick": ["--seconds", "0.02"]},
    "ratelimit": {"all": ["--checks", "1000", "--concurrency", "20", "--calls", "600"],
                  "quick": ["--checks", "100", "--concurrency", "5", "--calls", "50"]},
    "history_read": {"all": ["--requests", "300", "--rounds", "1", "--concurrency", "8"],
                     "quick": ["--requests", "30", "--rounds", "1", "--concurrency", "4"]},
    "catch_up": {"all": ["--messages", "10000", "--rounds", "1"], "quick": ["--messages", "100", "--rounds", "1"]},
    "reconnect_storm": {"all": ["--streams", "1000", "--baseline", "3"],
                        "quick": ["--streams", "50", "--baseline", "1", "--rate", "50"]},
    "cluster": {"all": ["--pairs", "20", "--seconds", "3", "--warmup", "1"],
                "quick": ["--pairs", "4", "--seconds", "1", "--warmup", "0.3"]},
    "group_fanout": {"all": ["--deliveries", "3000"],
                     "quick": ["--sizes", "2,10", "--deliveries", "100", "--encrypted-size", "0"]},
}


def sizes(quick: bool) -> dict[str, dict[str, Any]]:
    if quick:
        return {
            "relay": {"pairs": 4, "window": 2, "seconds": 1.0, "warmup": 0.3, "rounds": 1, "tail": 0.5},
            "latency": {"rate": 200.0, "seconds": 1.0, "pairs": 2, "warmup": 0.3, "rounds": 1, "tail": 0.5},
            "capacity": {"levels": [50, 150], "per_channel": 50, "users": 50},
            "raw_relay": {"pairs": 4, "window": 2, "seconds": 1.0, "warmup": 0.3, "tail": 0.5},
        }
    return {
        "relay": {"pairs": 50, "window": 2, "seconds": 8.0, "warmup": 2.0, "rounds": 3},
        "latency": {"rate": 1000.0, "seconds": 10.0, "pairs": 10, "warmup": 1.0, "rounds": 3},
        "capacity": {"levels": [1000, 5000, 10000], "per_channel": 100, "users": 1000},
        "raw_relay": {"pairs": 50, "window": 2, "seconds": 8.0, "warmup": 2.0},
    }


def progress(line: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {line}", flush=True)


def run_component(name: str, size: str) -> dict[str, Any]:
    """Run one of the component benchmarks as a subprocess and keep its table.

    `size`: "quick", "all" (small sizes within the suite) or "full" (the module's own defaults)."""
    command = [sys.executable, "-m", f"bench.{name}", *COMPONENTS[name].get(size, [])]
    progress(f"{name}: {' '.join(command[1:])}")
    started = time.monotonic()
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    output = finished.stdout + (finished.stderr[-2000:] if finished.returncode else "")
    print(output, flush=True)
    return {"command": " ".join(["python3", *command[1:]]), "returncode": finished.returncode,
            "seconds": round(time.monotonic() - started, 1), "output": output}


def run_workload(name: str, settings: dict[str, Any], out: Path, profile: bool) -> dict[str, Any]:
    profile_dir = out if profile else None
    if name == "relay":
        return relay.run(**settings, profile_dir=profile_dir, log=progress)
    if name == "latency":
        return latency.run(**settings, log=progress)
    if name == "capacity":
        return capacity.run(**settings, log=progress)
    if name == "raw_relay":
        return {"raw": relay.run_raw_only(**settings, log=progress)}
    raise ValueError(name)


def number(kind: Callable[[str], Any], *, minimum: float = 0, inclusive: bool = False) -> Callable[[str], Any]:
    """An argparse type: a number of `kind` above `minimum` (or at least it), else a one-line usage error."""
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(
                f"must be {'at least' if inclusive else 'greater than'} {minimum:g}, got {text}")
        return value

    return parse


def stream_levels(text: str) -> list[int]:
    """'1000,5000,10000' -> [1000, 5000, 10000], each above zero."""
    return [number(int)(value) for value in text.split(",")]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python3 -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["all", *WORKLOADS, *COMPONENTS])
    parser.add_argument("--quick", action="store_true", help="tiny sizes: seconds, not minutes")
    parser.add_argument("--out", type=Path, help="results folder (default bench/results/<timestamp>/)")
    parser.add_argument("--profile", action="store_true",
                        help="py-spy the gateways during the last Spartan relay round (written next to results)")
    parser.add_argument("--pairs", type=number(int), help="relay/latency: sender-receiver pairs")
    parser.add_argument("--seconds", type=number(float), help="relay/latency: measured seconds per round")
    parser.add_argument("--rounds", type=number(int), help="relay/latency: interleaved raw/Spartan rounds")
    parser.add_argument("--rate", type=number(float), help="latency: offered messages/s")
    parser.add_argument("--levels", type=stream_levels, help="capacity: stream counts, e.g. 1000,5000,10000")
    parser.add_argument("--users", type=number(int, inclusive=True),
                        help="capacity: distinct users (default 1000: 10 streams per user at 10k; 0: one per stream)")
    parser.add_argument("--skip-components", action="store_true", help="with all: skip the component benchmarks")
    return parser.parse_args(argv)


def optional_tools(args: argparse.Namespace) -> bool:
    """Say up front, in one line each, what a missing optional tool will leave out; True if the plot can be drawn."""
    # This environment's tools (py-spy) are found even when it was not activated (.venv/bin/python -m bench).
    os.environ["PATH"] = sysconfig.get_path("scripts") + os.pathsep + os.environ.get("PATH", "")
    run = ["-m", "bench", *args.argv]
    draw = importlib.util.find_spec("matplotlib") is not None
    if not draw:
        progress("results.png will not be drawn (the results are still written): "
                 + missing_package("matplotlib", run))
    if args.profile and shutil.which("py-spy") is None:
        progress("--profile will write no profiles: " + missing_package("py-spy", run))
    return draw


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    args.argv = list(argv if argv is not None else sys.argv[1:])
    draw = optional_tools(args)
    raise_open_files_limit()
    out = args.out or ROOT / "bench" / "results" / datetime.now().strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True, exist_ok=True)
    chosen = {"all": list(WORKLOADS[:3]) + ([] if args.skip_components else list(COMPONENTS))}.get(
        args.workload, [args.workload])
    all_sizes = sizes(args.quick)
    for name, settings in all_sizes.items():
        for key in ("pairs", "seconds", "rounds", "rate", "levels", "users"):
            if getattr(args, key) is not None and key in settings:
                settings[key] = getattr(args, key)
    results: dict[str, Any] = {
        "command": " ".join(["python3 -m bench", *(argv if argv is not None else sys.argv[1:])]),
        "started_at": datetime.now().isoformat(timespec="seconds"),
        "quick": args.quick, "machine": report.machine(), "load_before": report.load_average(),
        "settings": {name: all_sizes[name] for name in chosen if name in all_sizes},
        "body_bytes": relay.BODY_BYTES, "encrypted_bodies": False, "workloads": {}, "components": {},
    }
    started = time.monotonic()
    for name in chosen:
        if name in COMPONENTS:
            size = "quick" if args.quick else "all" if args.workload == "all" else "full"
            results["components"][name] = run_component(name, size)
        else:
            progress(f"{name}: start")
            results["workloads"][name] = run_workload(name, all_sizes[name], out, args.profile)
    results["elapsed_seconds"] = round(time.monotonic() - started, 1)
    results["load_after"] = report.load_average()
    json_path, png_path = report.write(results, out, draw=draw)
    print()
    print(report.table(results))
    plot_line = png_path or "not drawn: matplotlib is not installed (see the first line of this run)"
    print(f"\nresults: {json_path}\nplot:    {plot_line}\nelapsed: {results['elapsed_seconds']:.0f} s")


if __name__ == "__main__":
    main()
