"""Benchmark targets are judged only for runs of the sizes they are stated for; the plot is optional.

A --quick run (4 relay pairs for 1 s, 200 msg/s offered, 150 streams) must not print
"NOT met" against targets for 50 pairs, 1,000 msg/s and 10,000 streams.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bench import report
from bench.__main__ import sizes


def measured(streams: int) -> dict[str, Any]:
    """Numbers that miss every target, in the shape the workloads return."""
    return {"relay": {"ratio_to_raw": 0.5},
            "latency": {"spartan": {"latency_ms": {"p50": 5.0, "p99": 40.0, "p999": 50.0}}},
            "capacity": {"levels": [{"streams": streams, "rss_per_stream_kib": 80.0,
                                     "round_trip_ms": {"p50": 1.0, "max": 90.0}}]}}


def test_quick_sizes_get_no_verdict() -> None:
    quick = sizes(quick=True)
    found = report.verdicts(measured(quick["capacity"]["levels"][-1]), quick)
    assert found.keys() == report.TARGETS.keys()
    assert all(verdict["met"] is None and verdict["note"] for verdict in found.values()), found


def test_full_sizes_are_judged() -> None:
    full = sizes(quick=False)
    found = report.verdicts(measured(full["capacity"]["levels"][-1]), full)
    assert {name: verdict["met"] for name, verdict in found.items()} == {
        "relay_ratio_to_raw": False, "latency_p99_ms": False, "capacity_streams": True,
        "capacity_rss_per_stream_kib": False, "capacity_round_trip_ms": False}, found


def test_the_table_says_not_judged_instead_of_not_met() -> None:
    quick = sizes(quick=True)
    results = {"workloads": {}, "targets": report.verdicts(measured(150), quick),
               "machine": {"nproc": 2}, "load_before": [0, 0, 0], "load_after": [0, 0, 0]}
    table = report.table(results)
    assert "NOT met" not in table
    assert "not judged: 150 streams, target is for 10000" in table


def test_results_are_written_without_the_plot(tmp_path: Path) -> None:
    results = {"workloads": measured(150), "settings": sizes(quick=True)}
    json_path, png_path = report.write(results, tmp_path, draw=False)
    assert png_path is None and not (tmp_path / "results.png").exists()
    assert json.loads(json_path.read_text())["targets"]["capacity_streams"]["met"] is None

