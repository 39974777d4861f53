"""The benchmark suite runs end to end with tiny sizes and writes its results.

Only that results exist and have the documented shape is checked: benchmarks report
numbers, they never assert on them (a loaded CI machine must not fail this test).
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]  # matplotlib comes with the bench extra (scripts/bootstrap.sh)


@pytest.mark.timeout(240)
def test_quick_bench_writes_json_and_png(tmp_path: Path) -> None:
    out = tmp_path / "results"
    finished = subprocess.run(
        [sys.executable, "-m", "bench", "all", "--quick", "--skip-components", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=220)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]

    results = json.loads((out / "results.json").read_text())
    assert {"machine", "settings", "workloads", "targets", "load_before", "load_after"} <= results.keys()
    assert results["machine"]["nproc"] >= 1
    for name in ("relay", "latency"):
        workload = results["workloads"][name]
        assert {"raw", "spartan", "ratio_to_raw"} <= workload.keys()
        for system in ("raw", "spartan"):
            run = workload[system]
            assert run["delivered"] > 0, (name, system, run)
            assert {"p50", "p99", "p999"} <= run["latency_ms"].keys()
            assert run["cdf_ms"]
            cpu = run["cpu_us_per_message"]  # every process of the stack and both load generators
            relays = {"gateway-1", "gateway-2"} if system == "spartan" else {"raw-1", "raw-2"}
            assert {"redis", "load-sender", "load-receiver", *relays} <= cpu.keys(), cpu
            assert cpu["total"] > 0
    capacity = results["workloads"]["capacity"]
    assert [level["streams"] for level in capacity["levels"]] == results["settings"]["capacity"]["levels"]
    for level in capacity["levels"]:
        assert {"rss_kib", "rss_per_stream_kib", "round_trip_ms", "opens_per_s"} <= level.keys()
    assert capacity["user_list"]["users"] > 0
    assert "relay_ratio_to_raw" in results["targets"]
    png = out / "results.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "spartan/raw" in finished.stdout  # the table was printed
    assert "CPU µs per delivered message" in finished.stdout


@pytest.mark.parametrize("arguments", [["relay", "--rounds", "0"], ["latency", "--rate", "-5"],
                                       ["relay", "--pairs", "x"], ["capacity", "--levels", "10,0"]])
def test_bad_sizes_are_refused_in_one_line(arguments: list[str], tmp_path: Path) -> None:
    finished = subprocess.run([sys.executable, "-m", "bench", *arguments, "--out", str(tmp_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert finished.returncode == 2
    assert "Traceback" not in finished.stderr
    assert finished.stderr.strip().splitlines()[-1].startswith(f"python3 -m bench: error: argument {arguments[1]}:")


def test_component_benchmarks_run_from_the_suite(tmp_path: Path) -> None:
    out = tmp_path / "crypto"
    finished = subprocess.run([sys.executable, "-m", "bench", "crypto", "--quick", "--out", str(out)],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    assert results["components"]["crypto"]["returncode"] == 0
    assert results["components"]["crypto"]["output"].strip()


@pytest.mark.timeout(180)
def test_reconnect_storm_brings_every_stream_back_and_reports_its_window(tmp_path: Path) -> None:
    # Behaviour, not speed: every client of the killed gateway is back and has its message.
    out = tmp_path / "storm.json"
    finished = subprocess.run(
        [sys.executable, "-m", "bench.reconnect_storm", "--streams", "20", "--baseline", "0.5", "--rate", "20",
         "--json", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert finished.returncode == 0, finished.stdout[-3000:] + finished.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["reopened"] == result["caught_up"] == 20, result
    assert result["failed_storm_sends"] == 0 and result["live_before_ms"]["n"] > 0, result
    assert set(result["cpu_cores_during_storm"]) == {"presence", "history", "gateway-2", "redis"}
