"""Smoke test of the benchmark: its entry point, much reduced, into a temporary results
directory. Checks the shape of latest.json and that something was measured in every part;
never how fast anything was (that is the benchmark's output, not a test). Plus the
report's bookkeeping on made-up records (no lab)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report
from benchmarks.storm import POLL_MAX, POLL_MIN, poll_pause
from tests.conftest import REPO, unavailable

STATS = {"n", "p50", "p90", "p99", "max"}
MODES = {"binlog", "poll_1s", "poll_0.1s"}
FIGURES = ("detect_ms", "dispatch_ms", "cycle_ms", "detect_from_send_ms",
           "dispatch_from_send_ms")
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


@pytest.mark.mariadb
@pytest.mark.systemd
def test_reduced_benchmark_writes_results_with_the_schema(tmp_path: Path) -> None:
    done = run_bench(["--quick", "--alarms", "3", "--units", "2", "--max-pause", "0.05",
                      "--idle", "1", "--storm-units", "5", "--detect-rows", "20",
                      "--rounds", "1", "--big-rows", "30", "--output", str(tmp_path)],
                     timeout=240)
    if done.returncode == EXIT_UNAVAILABLE:
        unavailable(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0, done.stdout[-4000:]

    results = json.loads((tmp_path / "latest.json").read_text())
    assert set(results) == {"modes", "storm", "detection", "storm_100k", "idle", "scrape",
                            "alerts", "machine", "baseline"}
    assert set(results["modes"]) == MODES
    floors = {"detect_floor_ms", "detect_floor_from_commit_ms", "dispatch_ratio_to_floor",
              "detect_ratio_to_floor"}
    for mode, metrics in results["modes"].items():
        assert set(metrics) == {*FIGURES, "source", "detected_by_other_source",
                                *(floors if mode == "binlog" else ())}, mode
        assert metrics["source"] == ("binlog" if mode == "binlog" else "poll")
        assert metrics["detected_by_other_source"] == 0, (mode, done.stdout[-4000:])
        for metric in FIGURES:
            stats = metrics[metric]
            assert set(stats) == STATS, (mode, metric)
            assert stats["n"] > 0, (mode, metric, done.stdout[-4000:])
            assert all(isinstance(stats[k], float | int) for k in STATS), (mode, metric)
        # from the UPDATE's send is never earlier than from its OK
        assert metrics["dispatch_from_send_ms"]["p50"] >= metrics["dispatch_ms"]["p50"]
    assert set(results["idle"]) == MODES
    for mode, cost in results["idle"].items():
        assert {"cpu_percent", "queries_per_s", "rss_kb"} <= set(cost), mode
        assert cost["rss_kb"] > 0
    scrape = results["scrape"]  # the same alarms without, then with /metrics scraped
    assert scrape["alarms_per_condition"] == {"without": 3, "with": 3}
    for condition in ("without", "with"):
        assert set(scrape[condition]) == STATS and scrape[condition]["n"] > 0, scrape
    assert scrape["scrapes"] > 0 and not scrape["scrape_errors"], scrape
    # a ratio of two p50s of 3 alarms each: None when a p50 is 0 or below (measured from the
    # client's commit, a dispatch can come before the OK: report.py says why)
    assert scrape["scrape_bytes"] > 1000
    assert scrape["ratio_p50"] is None or isinstance(scrape["ratio_p50"], float)
    storm = results["storm"]
    assert storm["units"] == 5 and storm["max_concurrent_restarts"] > 0
    assert {"all_detected_ms", "all_cleared_ms", "units_restarted_twice"} <= set(storm)
    # counted by systemd (JobRemoved), not by the reactor: one finished job per unit
    assert storm["units_one_job_done"] == 5 and storm["job_results"] == {"done": 5}, storm
    assert storm["units_restarted_twice"] == 0 and storm["units_not_restarted"] == 0
    assert storm["exactly_once"] is True
    # the floors, measured in the same run with no reactor code, and the ratios
    assert storm["floor_restarts_per_s"] > 0 and storm["ratio_to_floor"] > 0
    binlog = results["modes"]["binlog"]
    assert binlog["detect_floor_ms"]["n"] == 3 and binlog["dispatch_ratio_to_floor"] > 0
    detection = results["detection"]
    assert detection["rows"] == 20 and detection["seen"] == 20 and detection["all_seen"]
    assert detection["floor_last_ms"] > 0 and detection["ratio_to_floor"] > 0
    big = results["storm_100k"]
    assert big["rows"] == 30 and big["real_units"] == 5 and big["ghost_rows"] == 25
    assert big["rows_handled"] == 30 and big["units_restarted_once"] == 5, big
    assert big["peak_rss_mb"] > 0 and big["exactly_once"] is True
    alerts = results["alerts"]  # alarm -> alert at a webhook; dispatch with a dead sink
    assert alerts["latency"]["alarms"] == 3 and alerts["latency"]["lost"] == 0
    assert alerts["latency"]["latency_ms"]["n"] == 3, alerts
    for run in ("no_sinks", "dead_sink"):
        assert alerts[run]["dispatch_ms"]["n"] == 3 and alerts[run]["not_cleared"] == 0
    assert alerts["dispatch_ratio_p50"] is None or isinstance(alerts["dispatch_ratio_p50"], float)
    machine = results["machine"]
    assert {"cpu_model", "cores", "kernel", "python", "mariadb", "date"} <= set(machine)
    assert machine["settle_time"] == 0

    samples = json.loads((tmp_path / "latest-samples.json").read_text())
    assert set(samples["modes"]) == MODES
    for mode, saved in samples["modes"].items():
        assert len(saved["alarms"]) == 3, mode
        assert {"sent", "committed", "source", "detect_ms", "dispatch_ms",
                "cycle_ms"} <= set(saved["alarms"][0]), mode

    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")
    table = (tmp_path / "latest.md").read_text()
    assert "| binlog dispatch, a dead sink (min_severity info) | 3 |" in table
    assert "| binlog | dispatch_ms |" in table
    assert "PASS" in done.stdout or "MISS" in done.stdout  # targets printed, not asserted
    assert "| n >= 200 per mode" in table and "min n = 3 | MISS |" in table  # 3 alarms
    assert "| /metrics every 100 ms | 3 |" in table
    assert "| binlog dispatch p50 with a /metrics scrape every 100 ms within 10 % of" in table

    # the tables and the plot rebuilt from latest.json and the samples: the same figures
    (tmp_path / "latest.png").unlink()
    rebuilt = subprocess.run([sys.executable, "-m", "benchmarks.report", str(tmp_path)],
                             cwd=REPO, capture_output=True, text=True, timeout=60)
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert (tmp_path / "latest.md").read_text() == table
    assert json.loads((tmp_path / "latest.json").read_text()) == results
    assert (tmp_path / "latest.png").read_bytes().startswith(b"\x89PNG")


def _record(source: str | None, sent: float, detected: float | None) -> dict[str, object]:
    committed = sent + 0.002
    ms = None if detected is None else (detected - committed) * 1000
    return {"pid": 1, "source": source, "sent": sent, "committed": committed,
            "detected": detected, "issued": detected, "cleared": committed + 0.03,
            "detect_ms": ms, "dispatch_ms": ms, "cycle_ms": 30.0,
            "detect_from_send_ms": None if ms is None else ms + 2,
            "dispatch_from_send_ms": None if ms is None else ms + 2, "round_trip_ms": 2.0}


def test_only_the_modes_own_source_counts_and_short_runs_miss_the_n_target() -> None:
    records = {"binlog": [_record("binlog", 0.0, 0.003), _record("sweep", 1.0, 1.5),
                          _record(None, 2.0, None)]}
    results: dict[str, object] = {"modes": {}, "storm": {}, "idle": {}, "alerts": {},
                                  "machine": {}}
    raw = report.summarize_modes(records, results)
    binlog = results["modes"]["binlog"]  # type: ignore[index]
    assert binlog["detected_by_other_source"] == 1
    assert binlog["cycle_ms"]["n"] == 1 and raw["binlog"]["cycle_ms"] == [30.0]
    assert binlog["dispatch_ms"]["p50"] == pytest.approx(1.0)
    assert binlog["dispatch_from_send_ms"]["p50"] == pytest.approx(3.0)
    assert results["machine"]["update_round_trip_ms"]["n"] == 3  # type: ignore[index]
    n_target = report.targets(results)[0]  # type: ignore[arg-type]
    assert n_target.goal.startswith("n >= 200") and n_target.verdict == "MISS"


@pytest.mark.mariadb
def test_reduced_fleet_benchmark_writes_its_results(tmp_path: Path) -> None:
    """benchmarks/fleet.py, much reduced: a primary and two replicas, one reader per
    layout, three alarms; every alarm seen by the probe, the files written."""
    proc = subprocess.run([sys.executable, "-m", "benchmarks.fleet", "--readers", "1",
                           "--alarms", "3", "--output", str(tmp_path)], cwd=REPO,
                          capture_output=True, text=True, timeout=300, check=False)
    if proc.returncode == EXIT_UNAVAILABLE:
        unavailable(proc.stderr.strip().splitlines()[-1])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((tmp_path / "fleet.json").read_text())
    assert [(r["layout"], r["readers"]) for r in results["runs"]] == [("one", 1),
                                                                     ("spread", 1)]
    for run in results["runs"]:
        assert run["missed"] == 0 and run["detect_ms"]["n"] == 3, run
        assert run["server_cpu_ms_per_alarm"] >= 0 and not run["reader_errors"], run
    assert (tmp_path / "fleet.md").read_text().startswith("Measured ")
    assert (tmp_path / "fleet.png").stat().st_size > 0


def test_the_storm_watcher_polls_gently_while_many_are_left_and_finely_at_the_end() -> None:
    assert poll_pause(0, 1000, 0.5) == POLL_MAX  # nothing cleared yet: no rate to go by
    assert poll_pause(200, 800, 1.0) == POLL_MAX  # 4 s left at 200/s
    assert poll_pause(900, 100, 4.5) == pytest.approx(0.05)  # 0.5 s left: a tenth of it
    assert poll_pause(995, 5, 5.0) == POLL_MIN  # the last few: the finest resolution
