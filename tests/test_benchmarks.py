"""Smoke test of the benchmark: its entry point, much reduced, into a temporary results
directory. Checks the shape of latest.json and that something was measured in every part;
never how fast anything was (that is the benchmark's output, not a test)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, unavailable

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]

STATS = {"n", "p50", "p90", "p99", "max"}
MODES = {"binlog", "poll_1s", "poll_0.1s"}
EXIT_UNAVAILABLE = 77  # benchmarks/bench.py: the lab cannot run on this machine


def run_bench(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """`python -m benchmarks.bench ARGS`; on a timeout it gets SIGTERM so that it cleans up
    its MariaDB and systemd sandbox before it is killed."""
    proc = subprocess.Popen([sys.executable, "-m", "benchmarks.bench", *args], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        pytest.fail(f"benchmark still running after {timeout} s:\n{out[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "")


def test_reduced_benchmark_writes_results_with_the_schema(tmp_path: Path) -> None:
    done = run_bench(["--quick", "--alarms", "3", "--units", "2", "--max-pause", "0.05",
                      "--idle", "1", "--storm-units", "5", "--detect-rows", "20",
                      "--output", str(tmp_path)], timeout=120)
    if done.returncode == EXIT_UNAVAILABLE:
        unavailable(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-4000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(results) == {"modes", "storm", "idle", "machine"}
    assert set(results["modes"]) == MODES
    for mode, metrics in results["modes"].items():
        assert set(metrics) == {"detect_ms", "dispatch_ms", "cycle_ms"}, mode
        for metric, stats in metrics.items():
            assert set(stats) == STATS, (mode, metric)
            assert stats["n"] > 0, (mode, metric, done.stdout[-4000:])
            assert all(isinstance(stats[k], float | int) for k in STATS), (mode, metric)
    assert set(results["idle"]) == MODES
    for mode, cost in results["idle"].items():
        assert {"cpu_percent", "queries_per_s", "rss_kb"} <= set(cost), mode
        assert cost["rss_kb"] > 0
    storm = results["storm"]
    assert storm["units"] == 5 and storm["max_concurrent_restarts"] > 0
    assert {"all_detected_ms", "all_cleared_ms", "units_restarted_twice"} <= set(storm)
    assert storm["detection"]["rows"] == 20 and storm["detection"]["seen"] > 0
    machine = results["machine"]
    assert {"cpu_model", "cores", "kernel", "python", "mariadb", "date"} <= set(machine)
    assert machine["settle_time"] == 0

    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")
    table = (tmp_path / "latest.md").read_text()
    assert "| binlog | dispatch_ms |" in table
    assert "PASS" in done.stdout or "MISS" in done.stdout  # targets printed, not asserted
