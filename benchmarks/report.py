"""Figures -> summaries, targets, and the result files (JSON, per-alarm samples JSON,
Markdown, PNG).

The targets are benchmark outputs printed beside the figures (PASS/MISS), never assertions.

    .venv/bin/python -m benchmarks.report [DIR]

rebuilds DIR/latest.md and latest.png (and the latency summaries in latest.json) from
DIR/latest.json and DIR/latest-samples.json (default DIR: benchmarks/results).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reactor.ops.table import table

MODES = ("binlog", "poll_1s", "poll_0.1s")
METRICS = ("detect_ms", "dispatch_ms", "cycle_ms")
METRIC_TEXT = {
    "detect_ms": "commit -> detected",
    "dispatch_ms": "commit -> RestartUnit issued",
    "cycle_ms": "commit -> restarted, healthy, alarma=0 seen",
}
# the same two figures measured from the UPDATE's send instead of its OK: the commit lies
# between the two, so these are upper bounds where METRICS are lower bounds
FROM_SEND = ("detect_from_send_ms", "dispatch_from_send_ms")
# which REACTOR_AUDIT source a mode's own alarms must come from (a sweep is not binlog)
SOURCES = {"binlog": "binlog", "poll_1s": "poll", "poll_0.1s": "poll"}
MIN_N = 200  # the "n >= 200 per mode"
PLOT_FLOOR_MS = 0.01  # log axis: values at or below zero are drawn here
RESULTS = Path(__file__).resolve().parent / "results"


# ------------------------------------------------------------------ statistics


def percentile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); `ordered` sorted."""
    k = (len(ordered) - 1) * q / 100
    lo = math.floor(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """{"n", "p50", "p90", "p99", "max"} in ms, 3 decimals; None figures when n = 0."""
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {"n": len(ordered), "p50": round(percentile(ordered, 50), 3),
            "p90": round(percentile(ordered, 90), 3), "p99": round(percentile(ordered, 99), 3),
            "max": round(ordered[-1], 3)}


def metric_lists(records: Iterable[dict[str, Any]], source: str) -> dict[str, list[float]]:
    """Per figure, the values of the alarms detected by `source` (the mode's own), from
    per-alarm records (workload.record); round_trip_ms over every alarm."""
    out: dict[str, list[float]] = {k: [] for k in (*METRICS, *FROM_SEND, "round_trip_ms")}
    for r in records:
        if r["round_trip_ms"] is not None:
            out["round_trip_ms"].append(r["round_trip_ms"])
        if r["source"] != source:
            continue
        for key in (*METRICS, *FROM_SEND):
            if r[key] is not None:
                out[key].append(r[key])
    return out


def mode_summary(records: list[dict[str, Any]], source: str) -> dict[str, Any]:
    """modes.<mode> in latest.json: METRICS and FROM_SEND summaries of the alarms `source`
    detected, and how many alarms another source detected (left out; expected 0)."""
    values = metric_lists(records, source)
    out: dict[str, Any] = {k: summarize(values[k]) for k in (*METRICS, *FROM_SEND)}
    out["source"] = source
    out["detected_by_other_source"] = sum(1 for r in records
                                          if r["source"] not in (None, source))
    return out


def fmt_ms(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 1000:
        return f"{value:.1f}"
    return f"{value:,.0f}"


# ------------------------------------------------------------------ floors


def _median(values: Sequence[float]) -> float | None:
    return round(percentile(sorted(values), 50), 3) if values else None


def _ratio(value: float | None, floor: float | None, digits: int = 2) -> float | None:
    return round(value / floor, digits) if value is not None and floor else None


def summarize_floor(samples: list[dict[str, float]], results: dict[str, Any]) -> None:
    """modes.binlog.detect_floor_ms: the bare reader's single-alarm detection from the
    UPDATE's send (and from its OK), and the reactor's dispatch p50 (from the send) over it."""
    binlog = results["modes"]["binlog"]
    binlog["detect_floor_ms"] = summarize([(s["detected"] - s["sent"]) * 1000
                                           for s in samples])
    binlog["detect_floor_from_commit_ms"] = summarize([(s["detected"] - s["committed"]) * 1000
                                                       for s in samples])
    floor = binlog["detect_floor_ms"]["p50"]
    binlog["dispatch_ratio_to_floor"] = _ratio(binlog["dispatch_from_send_ms"]["p50"], floor)
    binlog["detect_ratio_to_floor"] = _ratio(binlog["detect_from_send_ms"]["p50"], floor)


def summarize_storm(runs: list[dict[str, Any]],
                    floor_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """storm in latest.json: the run with the median rate in full, every run's rate, the
    bare client's, their medians and the ratio of the medians; exactly once in every run."""
    rates = [r["restarts_per_s"] or 0.0 for r in runs]
    floor_rates = [f["restarts_per_s"] for f in floor_runs]
    middle = sorted(range(len(runs)), key=lambda i: rates[i])[len(runs) // 2]
    out = dict(runs[middle])
    median, floor = _median(rates), _median(floor_rates)
    out.update({
        "rounds": len(runs),
        "restarts_per_s_runs": rates,
        "restarts_per_s": median,
        "floor_restarts_per_s_runs": floor_rates,
        "floor_restarts_per_s": floor,
        "floor_job_results": [f["job_results"] for f in floor_runs],
        "floor_systemd_sandbox_cpu_s": [f.get("systemd_sandbox_cpu_s") for f in floor_runs],
        "floor_units_one_job_done": [f.get("units_one_job_done") for f in floor_runs],
        "ratio_to_floor": _ratio(median, floor, 3),
        "exactly_once_runs": [r["exactly_once"] for r in runs],
        "exactly_once": all(r["exactly_once"] for r in runs),
    })
    return out


def summarize_detection(runs: list[dict[str, Any]],
                        floor_runs: list[dict[str, Any]]) -> dict[str, Any]:
    """detection in latest.json: `reactor watch`'s last detected_at and the bare reader's
    last row, medians over the rounds, and their ratio."""
    last = [r["last_detected_ms"] for r in runs if r["last_detected_ms"] is not None]
    floor = [f["last_ms"] for f in floor_runs if f["last_ms"] is not None]
    lines = [r["last_line_ms"] for r in runs if r["last_line_ms"] is not None]
    out = dict(runs[-1])
    out.update({
        "rounds": len(runs),
        "last_detected_ms_runs": last,
        "last_detected_ms": _median(last),
        "last_line_ms": _median(lines),
        "floor_last_ms_runs": floor,
        "floor_last_ms": _median(floor),
        "ratio_to_floor": _ratio(_median(last), _median(floor), 3),
        "all_seen": all(r["seen"] == r["rows"] for r in runs)
        and all(f["complete"] for f in floor_runs),
    })
    return out


# ------------------------------------------------------------------ targets


@dataclass(frozen=True, slots=True)
class Target:
    goal: str
    figure: str
    ok: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "MISS")


def _p50(results: dict[str, Any], mode: str, metric: str) -> float | None:
    value = results["modes"].get(mode, {}).get(metric, {}).get("p50")
    return None if value is None else float(value)


def ratios(results: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """p50 of each poll mode / p50 of binlog, per metric."""
    out: dict[str, dict[str, float | None]] = {}
    for mode in MODES[1:]:
        if mode not in results["modes"]:
            continue
        out[mode] = {}
        for metric in METRICS:
            fast, slow = _p50(results, "binlog", metric), _p50(results, mode, metric)
            out[mode][metric] = round(slow / fast, 1) if fast and slow and fast > 0 else None
    return out


def scrape_summary(out: dict[str, Any],
                   records: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """results["scrape"]: the phase's own figures plus, per condition (without / with a
    scrape every 100 ms), the dispatch_ms summary of the alarms the stream detected, and
    the ratios with / without of its p50 and p99."""
    summary = dict(out)
    for condition, alarms in records.items():
        summary[condition] = summarize(metric_lists(alarms, "binlog")["dispatch_ms"])
    for stat in ("p50", "p99"):
        without = summary.get("without", {}).get(stat)
        with_ = summary.get("with", {}).get(stat)
        summary[f"ratio_{stat}"] = (round(with_ / without, 3) if without and with_ is not None
                                    and without > 0 else None)
    return summary


def targets(results: dict[str, Any]) -> list[Target]:
    binlog = results["modes"].get("binlog", {})

    def figure(metric: str, stat: str, limit: float, goal: str) -> Target:
        value = binlog.get(metric, {}).get(stat)
        if value is None:
            return Target(goal, "-", None)
        return Target(goal, f"{fmt_ms(value)} ms", value <= limit)

    ratio = ratios(results).get("poll_1s", {}).get("dispatch_ms")
    scraped = results.get("scrape", {}).get("ratio_p50")
    idle = results["idle"].get("binlog")
    counts = [metrics[m]["n"] for metrics in results["modes"].values() for m in METRICS]
    storm, big, det = results["storm"], results.get("storm_100k", {}), results.get("detection", {})
    base = results.get("baseline", {}).get("dispatch_ms", {})

    def no_worse(stat: str) -> Target:
        now = binlog.get("dispatch_ms", {}).get(stat)
        before = base.get(stat)
        goal = f"binlog dispatch {stat} no worse than the committed results"
        if now is None or before is None:
            return Target(goal, "-", None)
        return Target(goal, f"{fmt_ms(now)} ms (before {fmt_ms(before)} ms)", now <= before)

    alerts = results.get("alerts") or {}
    ratio_dead = alerts.get("dispatch_ratio_p50")
    return [
        Target(f"n >= {MIN_N} per mode (alarms counted, every mode and figure)",
               f"min n = {min(counts)}" if counts else "-",
               min(counts) >= MIN_N if counts else None),
        figure("dispatch_ms", "p50", 3, "binlog dispatch p50 <= 3 ms"),
        figure("dispatch_ms", "p99", 15, "binlog dispatch p99 <= 15 ms"),
        Target("binlog dispatch p50 >= 100x lower than 1 s polling",
               "-" if ratio is None else f"{ratio:,.0f}x", None if ratio is None else ratio >= 100),
        figure("cycle_ms", "p50", 60, "binlog full cycle p50 <= 60 ms"),
        Target("binlog dispatch p50 with a /metrics scrape every 100 ms within 10 % of "
               "without (same run)", "-" if scraped is None else f"{scraped:.3f}x",
               None if scraped is None else scraped <= 1.10),
        Target("binlog idle: 0 queries/s between sweeps",
               "-" if idle is None else
               f"{idle['queries_per_s']:g} q/s ({idle['queries']} in {idle['seconds']:.0f} s)",
               None if idle is None else idle["queries"] == 0),
        no_worse("p50"),
        no_worse("p99"),
        Target("storm restarts/s >= 0.95x the bare D-Bus client, each unit exactly once",
               "-" if storm.get("ratio_to_floor") is None else
               f"{storm['ratio_to_floor']:.2f}x ({storm['restarts_per_s']} / "
               f"{storm['floor_restarts_per_s']} per s), exactly once: "
               f"{'yes' if storm['exactly_once'] else 'NO'}",
               None if storm.get("ratio_to_floor") is None else
               storm["ratio_to_floor"] >= 0.95 and storm["exactly_once"]),
        Target("100,000-alarm storm: peak RSS <= 150 MB, every row handled exactly once",
               "-" if not big else f"{big['peak_rss_mb']} MB, {big['rows_handled']:,} of "
               f"{big['rows']:,} rows",
               None if not big else big["peak_rss_mb"] <= 150 and big["exactly_once"]),
        Target("10,000-row detection <= 1.2x the bare reader",
               "-" if det.get("ratio_to_floor") is None else
               f"{det['ratio_to_floor']:.2f}x ({fmt_ms(det['last_detected_ms'])} / "
               f"{fmt_ms(det['floor_last_ms'])} ms)",
               None if det.get("ratio_to_floor") is None else
               det["ratio_to_floor"] <= 1.2 and det["all_seen"]),
        Target("binlog dispatch p50 with a dead alert sink within 10 % of no sinks",
               "-" if ratio_dead is None else f"{ratio_dead:.2f}x",
               None if ratio_dead is None else ratio_dead <= 1.10),
    ]


# ------------------------------------------------------------------ text


def _latency_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for mode, metrics in results["modes"].items():
        for metric in METRICS:
            s = metrics[metric]
            rows.append([mode, metric, str(s["n"]), fmt_ms(s["p50"]), fmt_ms(s["p90"]),
                         fmt_ms(s["p99"]), fmt_ms(s["max"])])
    return rows


def _idle_rows(results: dict[str, Any]) -> list[list[str]]:
    return [[mode, f"{v['cpu_percent']:.2f}", f"{v['queries_per_s']:g}",
             f"{v['rss_kb'] / 1024:.1f}", f"{v.get('rss_peak_kb', 0) / 1024:.1f}",
             f"{v['db_cpu_percent']:.2f}", f"{v['seconds']:.0f}"]
            for mode, v in results["idle"].items()]


def _storm_rows(results: dict[str, Any]) -> list[list[str]]:
    storm = results["storm"]
    rows = []
    if "units" in storm:
        s = storm
        rows += [
            ["units alarmed by one UPDATE", f"{s['units']:,}"],
            ["max_concurrent_restarts", str(s["max_concurrent_restarts"])],
            ["commit -> all detected", f"{fmt_ms(s['all_detected_ms'])} ms"],
            ["commit -> all RestartUnit issued", f"{fmt_ms(s['all_restart_issued_ms'])} ms"],
            ["commit -> all restarted", f"{fmt_ms(s['all_restarted_ms'])} ms"],
            ["commit -> all alarma=0 (client)", f"{fmt_ms(s['all_cleared_ms'])} ms"],
            ["restarts per second (median of the rounds)", str(s["restarts_per_s"])]]
        if s.get("floor_restarts_per_s") is not None:
            rows += [
                ["bare D-Bus client, same units and concurrency (floor)",
                 f"{s['floor_restarts_per_s']} per s"],
                ["reactor / floor", f"{s['ratio_to_floor']:.2f}x (rounds: reactor "
                 + ", ".join(f"{r:g}" for r in s["restarts_per_s_runs"]) + "; floor "
                 + ", ".join(f"{r:g}" for r in s["floor_restarts_per_s_runs"]) + ")"]]
        rows += [
            ["D-Bus calls per cycle (reactor's own count)",
             ", ".join(f"{k} {v:g}" for k, v in sorted(s.get("dbus_calls_per_cycle", {})
                                                      .items())) or "-"],
            ["database pool calls per cycle",
             ", ".join(f"{k} {v:g}" for k, v in sorted(s.get("database_calls_per_cycle", {})
                                                      .items())) or "-"],
            ["CPU s used meanwhile: reactor / mariadbd / systemd sandbox",
             " / ".join("-" if s.get(k) is None else f"{s[k]:.2f}"
                        for k in ("reactor_cpu_s", "mariadbd_cpu_s", "systemd_sandbox_cpu_s"))],
        ]
        if "job_results" in s:  # results from before the systemd count lack these
            rows += [
                ["systemd jobs finished (JobRemoved, counted apart from the reactor)",
                 ", ".join(f"{n:,} {r}" for r, n in sorted(s["job_results"].items())) or "0"],
                ["units with exactly one finished job (done)",
                 f"{s['units_one_job_done']:,} of {s['units']:,}"],
                ["units with more than one job (restarted twice)",
                 str(s["units_restarted_twice"])],
                ["units with no job (not restarted)", str(s["units_not_restarted"])],
            ]
        else:
            rows.append(["units restarted twice", str(s["units_restarted_twice"])])
        rows += [
            ["units with a new ExecMainStartTimestamp",
             f"{s['units_with_new_start_timestamp']:,} of {s['units']:,}"],
            ["each unit restarted exactly once" + (
                f" (systemd's count, {s['linger_s']:g} s after the last clear)"
                if "linger_s" in s else ""), "yes" if s["exactly_once"] else "NO"],
        ]
    d = results.get("detection") or storm.get("detection")  # older results: under storm
    if d:
        rows += [
            ["rows alarmed by one UPDATE (`reactor watch`)", f"{d['rows']:,} ({d['seen']:,} seen)"],
            ["commit -> last JSON line", f"{fmt_ms(d['last_line_ms'])} ms"],
            ["commit -> last detected_at", f"{fmt_ms(d['last_detected_ms'])} ms"],
        ]
        if d.get("floor_last_ms") is not None:
            rows += [
                ["commit -> last row out of a bare mysql-replication reader (floor)",
                 f"{fmt_ms(d['floor_last_ms'])} ms"],
                ["reactor watch / floor", f"{d['ratio_to_floor']:.2f}x (rounds: reactor "
                 + ", ".join(fmt_ms(v) for v in d["last_detected_ms_runs"]) + " ms; floor "
                 + ", ".join(fmt_ms(v) for v in d["floor_last_ms_runs"]) + " ms)"]]
    b = results.get("storm_100k")
    if b:
        rows += [
            ["alarms raised by one UPDATE (storm_100k)",
             f"{b['rows']:,} ({b['real_units']:,} real units, {b['ghost_rows']:,} naming none)"],
            ["commit -> every row handled", f"{fmt_ms(b['all_handled_ms'])} ms "
             f"({b['rows_per_s']} rows/s)"],
            ["reactor RSS at start / peak", f"{b['rss_start_mb']} / {b['peak_rss_mb']} MB"],
            ["rows handled exactly once (one detected, one outcome)",
             f"{b['rows_handled']:,} of {b['rows']:,}"],
            ["real units restarted once (systemd's count)",
             f"{b['units_restarted_once']:,} of {b['real_units']:,}"],
        ]
    return rows


SCRAPE_HEAD = ["scrape", "n", "dispatch p50 ms", "p90 ms", "p99 ms", "reactor CPU %"]


def _scrape_rows(results: dict[str, Any]) -> list[list[str]]:
    s = results.get("scrape") or {}
    rows = []
    for condition, label in (("without", "no scrape"),
                             ("with", f"/metrics every {s.get('interval_s', 0.1) * 1000:g} ms")):
        if condition not in s:
            continue
        d = s[condition]
        cpu = s.get("reactor_cpu_percent", {}).get(condition)
        rows.append([label, str(d["n"]), fmt_ms(d["p50"]), fmt_ms(d["p90"]), fmt_ms(d["p99"]),
                     "-" if cpu is None else f"{cpu:.2f}"])
    return rows


def _scrape_text(results: dict[str, Any]) -> str | None:
    s = results.get("scrape") or {}
    if "with" not in s:
        return None
    rt = s["scrape_round_trip_ms"]
    return (f"Scrapes: {s['scrapes']} over one kept-alive connection, round trip (request -> "
            f"whole body) p50 {fmt_ms(rt['p50'])} ms, p99 {fmt_ms(rt['p99'])} ms, "
            f"{s['scrape_bytes']:,} bytes; dispatch with / without: p50 "
            f"{s['ratio_p50']}x, p99 {s['ratio_p99']}x (blocks of alarms alternate between "
            "the two, on one reactor).")


def _alert_rows(results: dict[str, Any]) -> list[list[str]]:
    a = results["alerts"]
    rows = []
    for label, s in (("step -> received at a local webhook (group_wait 0)",
                      a["latency"]["latency_ms"]),
                     ("binlog dispatch, no alert sinks", a["no_sinks"]["dispatch_ms"]),
                     ("binlog dispatch, a dead sink (min_severity info)",
                      a["dead_sink"]["dispatch_ms"])):
        rows.append([label, str(s["n"]), fmt_ms(s["p50"]), fmt_ms(s["p90"]), fmt_ms(s["p99"]),
                     fmt_ms(s["max"])])
    return rows


def _table(head: list[str], rows: list[list[str]], md: bool) -> str:
    if md:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(" --- " for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        return "\n".join(lines)
    out = io.StringIO()
    table(head, rows, out)
    return out.getvalue().rstrip("\n")


LATENCY_HEAD = ["mode", "metric", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"]
IDLE_HEAD = ["idle mode", "reactor CPU %", "queries/s", "RSS MiB", "peak RSS MiB",
             "mariadbd CPU %", "window s"]


def _ratio_text(results: dict[str, Any]) -> list[str]:
    out = []
    for mode, per in ratios(results).items():
        parts = [f"{m.removesuffix('_ms')} {'-' if r is None else f'{r:,.0f}x'}"
                 for m, r in per.items()]
        out.append(f"{mode} p50 / binlog p50: " + ", ".join(parts))
    return out


def _from_send_text(results: dict[str, Any]) -> str | None:
    parts = []
    for mode, metrics in results["modes"].items():
        figures = []
        for key in FROM_SEND:
            s = metrics.get(key)
            if s and s["n"]:
                figures.append(f"{key.split('_')[0]} " + " / ".join(
                    fmt_ms(s[k]) for k in ("p50", "p90", "p99", "max")))
        if figures:
            parts.append(f"{mode} " + ", ".join(figures))
    if not parts:
        return None
    return ("Measured from the UPDATE's send instead of its OK (the commit lies in between: "
            "the table's figures are lower bounds, these upper bounds), p50 / p90 / p99 / max "
            "ms: " + "; ".join(parts) + ".")


def _source_text(results: dict[str, Any]) -> str | None:
    parts = [f"{mode} {metrics['detected_by_other_source']}"
             for mode, metrics in results["modes"].items()
             if "detected_by_other_source" in metrics]
    if not parts:
        return None
    return ("Only alarms detected by the mode's own source count (binlog: the stream, poll: "
            "the poller); detected otherwise (a sweep) and left out: " + ", ".join(parts)
            + ".")


def _floor_text(results: dict[str, Any]) -> str | None:
    b = results["modes"].get("binlog", {})
    f = b.get("detect_floor_ms")
    if not f or not f["n"]:
        return None
    figures = " / ".join(fmt_ms(f[k]) for k in ("p50", "p90", "p99", "max"))
    text = ("Floor: a bare mysql-replication reader, alone, on the same alarms, detected each "
            f"p50 / p90 / p99 / max {figures}"
            f" ms after the UPDATE's send (n = {f['n']}); the reactor's binlog detection / "
            f"floor {b['detect_ratio_to_floor']}x, its RestartUnit dispatch / floor "
            f"{b['dispatch_ratio_to_floor']}x (p50, both from the send).")
    base = results.get("baseline")
    if base and base.get("dispatch_ms"):
        now = b["dispatch_ms"]
        text += (f" Single-alarm dispatch p50 / p99 now {fmt_ms(now['p50'])} / "
                 f"{fmt_ms(now['p99'])} ms; in the committed results of {base['date']} "
                 f"{fmt_ms(base['dispatch_ms']['p50'])} / {fmt_ms(base['dispatch_ms']['p99'])} ms.")
    return text


def render(results: dict[str, Any], md: bool) -> str:
    m = results["machine"]
    parts = []
    if md:
        parts.append(f"Measured {m['date']} on {m['cpu_model']} ({m['cores']} cores), "
                     f"kernel {m['kernel']}, MariaDB {m['mariadb']}, Python {m['python']}; "
                     f"settle_time = {m['settle_time']:g} s"
                     + (" — **quick smoke run, not representative**" if m["quick"] else "")
                     + ". Milliseconds after the client's commit.")
    if results["modes"]:
        parts.append(_table(LATENCY_HEAD, _latency_rows(results), md))
    rtt = m.get("update_round_trip_ms")
    if rtt and rtt["n"]:
        parts.append(
            f"The client's UPDATE round trip (sent -> OK) was p50 {fmt_ms(rtt['p50'])} ms, "
            f"p99 {fmt_ms(rtt['p99'])} ms, max {fmt_ms(rtt['max'])} ms: the server sends the "
            "binlog event before it answers the client (redo log flush), so a detect_ms or "
            "dispatch_ms can be slightly negative.")
    for text in (_from_send_text(results), _source_text(results)):
        if text:
            parts.append(text)
    ratio = _ratio_text(results)
    if ratio:
        parts.append("\n".join(f"- {r}" if md else r for r in ratio))
    floor = _floor_text(results)
    if floor:
        parts.append(floor)
    scrape_rows = _scrape_rows(results)
    if scrape_rows:
        parts.append(_table(SCRAPE_HEAD, scrape_rows, md))
        text = _scrape_text(results)
        if text:
            parts.append(text)
    if results["storm"] or results.get("detection") or results.get("storm_100k"):
        parts.append(_table(["burst", "figure"], _storm_rows(results), md))
    if results["idle"]:
        parts.append(_table(IDLE_HEAD, _idle_rows(results), md))
    if results.get("alerts"):
        parts.append(_table(["alerts", "n", "p50 ms", "p90 ms", "p99 ms", "max ms"],
                            _alert_rows(results), md))
    parts.append(_table(["target", "measured", "result"],
                        [[t.goal, t.figure, t.verdict] for t in targets(results)], md))
    return "\n\n".join(parts) + "\n"


# ------------------------------------------------------------------ files


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json(results: dict[str, Any], path: Path) -> None:
    _atomic_write(path, (json.dumps(results, indent=2) + "\n").encode())


def write_markdown(results: dict[str, Any], path: Path) -> None:
    _atomic_write(path, render(results, md=True).encode())


def write_samples(records: dict[str, list[dict[str, Any]]], path: Path) -> None:
    """latest-samples.json: per mode, its source and every alarm (workload.record)."""
    data = {"modes": {mode: {"source": SOURCES[mode], "alarms": alarms}
                      for mode, alarms in records.items()}}
    _atomic_write(path, (json.dumps(data) + "\n").encode())


def summarize_modes(records: dict[str, list[dict[str, Any]]],
                    results: dict[str, Any]) -> dict[str, dict[str, list[float]]]:
    """Fill results["modes"] and machine.update_round_trip_ms from per-alarm records;
    returns the value lists per mode (the plot's input)."""
    raw = {mode: metric_lists(alarms, SOURCES[mode]) for mode, alarms in records.items()}
    for mode, alarms in records.items():
        old = results["modes"].get(mode, {})
        results["modes"][mode] = new = mode_summary(alarms, SOURCES[mode])
        floor = old.get("detect_floor_ms")
        if floor is not None:  # measured apart (summarize_floor): kept, its ratios redone
            new["detect_floor_ms"] = floor
            new["detect_floor_from_commit_ms"] = old["detect_floor_from_commit_ms"]
            new["dispatch_ratio_to_floor"] = _ratio(new["dispatch_from_send_ms"]["p50"],
                                                    floor["p50"])
            new["detect_ratio_to_floor"] = _ratio(new["detect_from_send_ms"]["p50"],
                                                  floor["p50"])
    if records:
        # the client's UPDATE round trip: the commit happens somewhere inside it
        results["machine"]["update_round_trip_ms"] = summarize(
            [v for values in raw.values() for v in values["round_trip_ms"]])
    return raw


def rebuild(directory: Path) -> list[Path]:
    """latest.md and latest.png (and latest.json's latency summaries) again from
    latest.json and latest-samples.json in `directory`."""
    results = json.loads((directory / "latest.json").read_text())
    samples = json.loads((directory / "latest-samples.json").read_text())
    records = {mode: m["alarms"] for mode, m in samples["modes"].items()}
    raw = summarize_modes(records, results)
    paths = [directory / f"latest.{ext}" for ext in ("json", "md", "png")]
    write_json(results, paths[0])
    write_markdown(results, paths[1])
    if raw:
        plot(raw, results, paths[2])
    return paths


def plot(raw: dict[str, dict[str, list[float]]], results: dict[str, Any], path: Path) -> None:
    """Latency CDFs, one panel per metric, one line per mode, log-scale time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    limits = {"dispatch_ms": [3.0, 15.0], "cycle_ms": [60.0]}
    fig, axes = plt.subplots(1, len(METRICS), figsize=(15, 4.6), sharey=True)
    for ax, metric in zip(axes, METRICS, strict=True):
        for mode, metrics in raw.items():
            values = sorted(max(v, PLOT_FLOOR_MS) for v in metrics[metric])
            if not values:
                continue
            ys = [i / len(values) for i in range(len(values) + 1)]
            ax.step([values[0], *values], ys, where="post", label=f"{mode} (n={len(values)})")
        for limit in limits.get(metric, []):
            ax.axvline(limit, color="grey", linestyle="--", linewidth=0.8)
            ax.text(limit, 0.03, f" target {limit:g} ms", color="grey", fontsize=8,
                    rotation=90, va="bottom", transform=ax.get_xaxis_transform())
        ax.set_xscale("log")
        ax.set_ylim(0, 1.02)
        ax.set_title(f"{metric}: {METRIC_TEXT[metric]}", fontsize=9)
        floored = sum(1 for m in raw.values() for v in m[metric] if v <= PLOT_FLOOR_MS)
        ax.set_xlabel("ms after the client's commit (log scale)"
                      + (f"\n{floored} value(s) <= 0 drawn at {PLOT_FLOOR_MS:g} ms" if floored
                         else ""), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("fraction of alarms")
    axes[0].legend(loc="upper left", fontsize=8)
    m = results["machine"]
    fig.suptitle(f"reactor: binlog vs polling — settle_time {m['settle_time']:g} s, "
                 f"{m['cores']} cores, {m['date']}" + (" (quick run)" if m["quick"] else ""),
                 fontsize=10)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Rebuild latest.md and latest.png (and the latency summaries in "
                    "latest.json) from latest.json and latest-samples.json.")
    parser.add_argument("directory", nargs="?", type=Path, default=RESULTS,
                        help=f"results directory (default {RESULTS})")
    args = parser.parse_args(argv)
    paths = rebuild(args.directory)
    print(render(json.loads(paths[0].read_text()), md=False), flush=True)
    print("rebuilt: " + ", ".join(str(p) for p in paths if p.exists()), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
