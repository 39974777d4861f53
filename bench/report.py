"""Turns benchmark results into a table on stdout, `results.json` and `results.png`.

The plot needs matplotlib (the bench extra); without it only the table and the JSON are
written. The JSON holds every number the table shows plus the machine, the settings, the
load average before and after (other work on the host shows up there), each
round's rate, and a down-sampled latency distribution per run for the plot. The
targets are reported next to the numbers, judged only for runs of the sizes they are
stated for; nothing is asserted.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.summary import format_table

RELAY_WORKLOADS = ("relay", "latency", "raw_relay")
TARGETS = {
    "relay_ratio_to_raw": 0.70,  # relay throughput >= 70% of the raw bound
    "latency_p99_ms": 10.0,  # p99 <= 10 ms at 1,000 msg/s across replicas
    "capacity_streams": 10000,  # 10,000 idle streams on one gateway ...
    "capacity_rss_per_stream_kib": 30000 / 1024,  # ... at <= 30 KB RSS each ...
    "capacity_round_trip_ms": 50.0,  # ... with round trips under 50 ms
}


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory_kib = int(line.split()[1])
    try:
        redis_version = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        redis_version = ""
    import grpc

    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(memory_kib / 1024 ** 2, 1),
            "python": sys.version.split()[0], "grpcio": grpc.__version__, "redis_server": redis_version,
            "platform": platform.platform()}


def load_average() -> list[float]:
    return [round(value, 2) for value in os.getloadavg()]


# The sizes each target is stated for: a run below them (--quick, or smaller --levels/--rate)
# is reported with its numbers but no verdict, since e.g. RSS per stream at 150 streams is
# mostly the process's base memory and says nothing about 10,000.
TARGET_RELAY = {"pairs": 50, "seconds": 8.0}  # a shorter or narrower relay run gives a noisy ratio
TARGET_RATE = 1000.0  # the latency target is for 1,000 msg/s offered
TARGET_STREAMS = TARGETS["capacity_streams"]


def verdicts(workloads: dict[str, Any], settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each target with the measured value and whether it was met (reported, never asserted).

    `met` is None, with a `note`, when the run was smaller than the sizes the target is for."""
    settings = settings or {}
    found: dict[str, Any] = {}
    relay = workloads.get("relay")
    if relay and relay.get("ratio_to_raw") is not None:
        run = settings.get("relay", TARGET_RELAY)
        short = [f"{run.get(key)} {key}" for key, least in TARGET_RELAY.items() if run.get(key, least) < least]
        found["relay_ratio_to_raw"] = _verdict(
            relay["ratio_to_raw"], TARGETS["relay_ratio_to_raw"], higher=True,
            unjudged=f"{', '.join(short)}, target is for {TARGET_RELAY['pairs']} pairs, {TARGET_RELAY['seconds']:g} s"
            if short else None)
    latency = workloads.get("latency")
    if latency and latency.get("spartan", {}).get("latency_ms"):
        rate = settings.get("latency", {}).get("rate", TARGET_RATE)
        found["latency_p99_ms"] = _verdict(
            latency["spartan"]["latency_ms"]["p99"], TARGETS["latency_p99_ms"],
            unjudged=None if rate >= TARGET_RATE else f"offered {rate:g} msg/s, target is for {TARGET_RATE:g}")
    capacity = workloads.get("capacity")
    if capacity and capacity.get("levels"):
        top = capacity["levels"][-1]
        small = (None if top["streams"] >= TARGET_STREAMS
                 else f"{top['streams']} streams, target is for {TARGET_STREAMS}")
        found["capacity_streams"] = _verdict(top["streams"], TARGETS["capacity_streams"], higher=True, unjudged=small)
        found["capacity_rss_per_stream_kib"] = _verdict(top["rss_per_stream_kib"],
                                                        TARGETS["capacity_rss_per_stream_kib"], unjudged=small)
        found["capacity_round_trip_ms"] = _verdict(top["round_trip_ms"]["max"], TARGETS["capacity_round_trip_ms"],
                                                   unjudged=small)
    return found


def _verdict(value: float, target: float, *, higher: bool = False, unjudged: str | None = None) -> dict[str, Any]:
    if unjudged:
        return {"value": round(value, 3), "target": round(target, 3), "met": None, "note": unjudged}
    return {"value": round(value, 3), "target": round(target, 3), "met": value >= target if higher else value <= target}


# ----------------------------------------------------------------- table
def table(results: dict[str, Any]) -> str:
    rows: list[list[str]] = []
    workloads = results["workloads"]
    for name in RELAY_WORKLOADS:
        if name not in workloads:
            continue
        for system in [s for s in ("raw", "spartan") if s in workloads[name]]:
            run = workloads[name][system]
            latency = run.get("latency_ms") or {}
            rows.append([name, system, f"{run['delivered_per_s']:.0f}", _ms(latency.get("p50")),
                         _ms(latency.get("p99")), _ms(latency.get("p999"))])
        ratio = workloads[name].get("ratio_to_raw")
        if ratio is not None:
            rows.append([name, "spartan/raw", f"{ratio:.0%}", "", "", ""])
    lines = [format_table(["workload", "system", "msg/s", "p50 ms", "p99 ms", "p999 ms"], rows, left=2)]
    lines += cpu_table(workloads)
    capacity = workloads.get("capacity")
    if capacity:
        users = (capacity.get("user_list") or {}).get("users")
        lines += ["", f"capacity (one gateway, idle ReceiveMsg streams, {users} configured users)", format_table(
            ["streams", "conns", "RSS MiB", "KiB/stream", "opens/s", "rtt p50 ms", "rtt max ms"],
            [[str(level["streams"]), str(level["connections"]), f"{level['rss_kib'] / 1024:.1f}",
              f"{level['rss_per_stream_kib']:.1f}", f"{level['opens_per_s']:.0f}",
              f"{level['round_trip_ms']['p50']:.2f}", f"{level['round_trip_ms']['max']:.2f}"]
             for level in capacity["levels"]], left=0)]
    if results.get("targets"):
        lines += ["", "targets (reported, not asserted)"]
        for name, verdict in results["targets"].items():
            outcome = {True: "met", False: "NOT met"}.get(verdict["met"], f"not judged: {verdict.get('note')}")
            lines.append(f"  {name:<30} {verdict['value']:>10} vs {verdict['target']:<8} {outcome}")
    lines.append(f"\nload average before/after: {results.get('load_before')} / {results.get('load_after')} "
                 f"on {results['machine']['nproc']} cores")
    return "\n".join(lines)


CPU_COLUMNS = {"send side": ("gateway-1", "raw-1"), "receive side": ("gateway-2", "raw-2"), "redis": ("redis",),
               "other services": ("presence", "history"), "load generators": ("load-sender", "load-receiver")}


def cpu_table(workloads: dict[str, Any]) -> list[str]:
    """CPU µs per delivered message by role, for each relay workload's reported rounds."""
    rows = []
    for name in RELAY_WORKLOADS:
        for system in ("raw", "spartan"):
            cpu = (workloads.get(name, {}).get(system) or {}).get("cpu_us_per_message")
            if cpu:
                rows.append([name, system, *(f"{sum(cpu.get(p, 0.0) for p in processes):.0f}"
                                             for processes in CPU_COLUMNS.values()), f"{cpu['total']:.0f}"])
    if not rows:
        return []
    return ["", "CPU µs per delivered message (all cores; the machine's cores bound the total)",
            format_table(["workload", "system", *CPU_COLUMNS, "total"], rows, left=2)]


def _ms(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else "-"


# ------------------------------------------------------------------ plot
def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = results["workloads"]
    figure, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    latency_axis, rate_axis, capacity_axis = axes
    colors = {"raw": "tab:gray", "spartan": "tab:blue"}
    styles = {"relay": "-", "latency": "--", "raw_relay": ":"}
    bars: list[tuple[str, float, str]] = []
    for name in RELAY_WORKLOADS:
        if name not in workloads:
            continue
        for system in [s for s in ("raw", "spartan") if s in workloads[name]]:
            run = workloads[name][system]
            cdf = run.get("cdf_ms") or []
            if cdf:
                fractions = [i / max(1, len(cdf) - 1) for i in range(len(cdf))]
                latency_axis.plot(cdf, fractions, styles[name], color=colors[system], label=f"{name} / {system}")
            bars.append((f"{name}\n{system}", run["delivered_per_s"], colors[system]))
    latency_axis.set_xscale("log")
    latency_axis.set_xlabel("delivery latency, ms (log)")
    latency_axis.set_ylabel("fraction of messages")
    latency_axis.set_title("latency distribution (send → receive)")
    latency_axis.grid(True, which="both", alpha=0.3)
    if bars:
        latency_axis.legend(fontsize=8)
        rate_axis.bar([b[0] for b in bars], [b[1] for b in bars], color=[b[2] for b in bars])
        for index, (_, value, _) in enumerate(bars):
            rate_axis.text(index, value, f"{value:.0f}", ha="center", va="bottom", fontsize=8)
    rate_axis.set_ylabel("delivered messages/s")
    rate_axis.set_title("throughput per workload")
    capacity = workloads.get("capacity")
    if capacity and capacity.get("levels"):
        streams = [level["streams"] for level in capacity["levels"]]
        capacity_axis.plot(streams, [level["rss_kib"] / 1024 for level in capacity["levels"]], "o-",
                           color="tab:blue", label="gateway RSS, MiB")
        capacity_axis.set_xlabel("idle ReceiveMsg streams on one gateway")
        capacity_axis.set_ylabel("RSS, MiB")
        twin = capacity_axis.twinx()
        twin.plot(streams, [level["round_trip_ms"]["p50"] for level in capacity["levels"]], "s--",
                  color="tab:orange", label="round trip p50, ms")
        twin.set_ylabel("round trip p50, ms")
        capacity_axis.set_ylim(bottom=0)
        twin.set_ylim(bottom=0)
        capacity_axis.legend(loc="upper left", fontsize=8)
        twin.legend(loc="lower right", fontsize=8)
    capacity_axis.set_title("capacity")
    figure.suptitle(f"Spartan benchmarks — {results['machine']['nproc']} cores, {results['machine']['cpu_model']}",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], directory: Path, *, draw: bool = True) -> tuple[Path, Path | None]:
    """results.json and (with `draw`) results.png in `directory`; returns their paths (None: no plot)."""
    directory.mkdir(parents=True, exist_ok=True)
    results["targets"] = verdicts(results["workloads"], results.get("settings"))
    json_path = directory / "results.json"
    json_path.write_text(json.dumps(results, indent=1, default=str))
    if not draw:
        return json_path, None
    png_path = directory / "results.png"
    plot(results, png_path)
    return json_path, png_path
