"""Metrics without a database: the [metrics] keys, the observer's counters, the gauges read
from a snapshot, the alerts extension point, the HTTP listener (a real socket on
loopback), the textfile writer, and the shipped rules and dashboard naming only metrics
reactor exports (promtool checks and tests the rules)."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import time
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from lab import LabUnavailable
from lab.mariadb import free_port
from lab.prometheus import promtool
from reactor.actions.breaker import Breaker, State
from reactor.config import parse_config
from reactor.errors import ConfigError
from reactor.events import Happening, Notice, Step
from reactor.metrics.registry import Metrics
from reactor.metrics.server import MetricsServer, Routes, render_metrics
from reactor.metrics.snapshot import CycleSnapshot, Snapshot, SourceSnapshot
from reactor.metrics.status import document, summary
from reactor.metrics.textfile import TextfileWriter
from tests.conftest import REPO, unavailable

RULES = REPO / "contrib" / "prometheus" / "reactor-rules.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "reactor-rules.test.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "reactor-dashboard.json"
BASE = "[database]\nuser = reactor\n"


def config(text: str = "") -> object:
    return parse_config(BASE + text)


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(BASE + text)
    return info.value.problems


# ------------------------------------------------------------------ config


def test_metrics_keys_default_on_loopback_and_refuse_a_remote_address_unless_allowed() -> None:
    default = parse_config(BASE).metrics
    assert default.listen == ("127.0.0.1", 9464) and not default.allow_remote
    assert default.textfile == "" and default.textfile_interval == 15
    assert parse_config(BASE + "[metrics]\nlisten =\n").metrics.listen is None
    assert parse_config(BASE + "[metrics]\nlisten = [::1]:9000\n").metrics.listen == ("::1", 9000)
    assert parse_config(BASE + "[metrics]\nlisten = localhost:9000\n").metrics.listen == (
        "localhost", 9000)
    (remote,) = problems("[metrics]\nlisten = 0.0.0.0:9464\n")
    assert remote.startswith("[metrics] listen: 0.0.0.0 is not a loopback address")
    assert "allow_remote = yes" in remote
    allowed = parse_config(BASE + "[metrics]\nlisten = 0.0.0.0:9464\nallow_remote = yes\n")
    assert allowed.metrics.listen == ("0.0.0.0", 9464)
    assert problems("[metrics]\nlisten = 9464\n")[0].startswith("[metrics] listen: must be "
                                                                "host:port")
    assert problems("[metrics]\nlisten = ::1:9464\n")[0].startswith(
        "[metrics] listen: an IPv6 address goes in brackets")
    assert problems("[metrics]\nlisten = 127.0.0.1:0\n") == [
        "[metrics] listen: port must be 1-65535, got 0"]
    assert problems("[metrics]\ntextfile = /var/lib/x/reactor.txt\n")[0].startswith(
        "[metrics] textfile: must end in .prom")
    assert problems("[metrics]\ntextfile_interval = 0\n")[0].startswith(
        "[metrics] textfile_interval: must be from 0.1 to 86400 seconds")


# ------------------------------------------------------------------ observer


def step(name: str, cycle: int = 1, pid: int = 7, latency_ms: float | None = 1.5,
         source: str = "binlog", method: str = "") -> Step:
    return Step(at=time.time(), cycle=cycle, process_id=pid, process_name="web",
                unit="web.service", step=name, source=source, latency_ms=latency_ms,
                detail=f"{name} detail", method=method)


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_steps_and_notices_move_the_counters_and_the_histogram() -> None:
    m = Metrics()
    before = samples(m)
    assert before[("reactor_cycles_total", (("result", "cleared"),))] == 0
    assert before[("reactor_alarms_detected_total", (("source", "sweep"),))] == 0
    for s in (step("detected", latency_ms=0), step("restart_issued", latency_ms=0.8),
              step("restarted", method="service"), step("health_ok", latency_ms=30),
              step("cleared", latency_ms=31),
              # a second cycle: two attempts, the second's restart_issued is not timed
              step("detected", 2), step("restart_issued", 2, latency_ms=3),
              step("restart_failed", 2, method="kill-fallback"),
              step("restart_issued", 2, latency_ms=2000), step("cycle_failed", 2),
              step("no_such_step", 3, pid=9)):
        m.on_step(s)
    m.on_notice(Notice(Happening.SWEEP_CAUGHT, "2 alarms", process_ids=(4, 5)))
    m.on_notice(Notice(Happening.POSITION_LOST, "gone"))
    got = samples(m)
    assert got[("reactor_alarms_detected_total", (("source", "binlog"),))] == 2
    assert got[("reactor_cycles_total", (("result", "cleared"),))] == 1
    assert got[("reactor_cycles_total", (("result", "cycle_failed"),))] == 1
    assert got[("reactor_restart_actions_total", (("result", "ok"), ("strategy", "service")))] == 1
    assert got[("reactor_restart_actions_total", (("result", "failed"),
                                                  ("strategy", "kill-fallback")))] == 1
    issued = (("source", "binlog"), ("step", "restart_issued"))
    assert got[("reactor_alarm_latency_seconds_count", issued)] == 2  # one per cycle
    assert got[("reactor_alarm_latency_seconds_bucket", (("le", "0.001"), *issued))] == 1
    assert got[("reactor_alarm_latency_seconds_bucket", (("le", "0.0025"), *issued))] == 1
    assert got[("reactor_alarm_latency_seconds_bucket", (("le", "0.005"), *issued))] == 2
    healthy = (("source", "binlog"), ("step", "healthy"))
    assert got[("reactor_alarm_latency_seconds_sum", healthy)] == pytest.approx(0.03)
    assert got[("reactor_sweep_caught_alarms_total", ())] == 2
    assert got[("reactor_happenings_total", (("kind", "position_lost"),))] == 1
    assert m.caught == 2 and m.last[7].step == "cycle_failed" and m.last[9].step == "no_such_step"
    assert not any(name.endswith("_created") for name, _ in got)


# ------------------------------------------------------------------ live gauges


def snapshot(mode: str = "binlog", **changes: object) -> Snapshot:
    snap = Snapshot(
        version="9.9", pid=1234, configured_mode="auto", started_at=1_800_000_000.0,
        ready=True,
        source=SourceSnapshot(mode=mode, connected=True if mode == "binlog" else None,
                              position="binlog.000002:1234", seconds_behind_source=0.0,
                              seconds_since_last_event=0.4, reconnects=2, transactions=40,
                              sweeps=3, sweep_seconds=0.006, last_sweep_at=1_800_000_100.0),
        bus_connected=True, conditions={},
        in_flight=(CycleSnapshot(7, "web", "binlog", time.time() - 1, True),),
        breakers={"web": Breaker(), "db": Breaker(State.OPEN, 3, time.time() + 60)},
        names={7: "web", 8: "db"}, counters={"coalesced": 4})
    return replace(snap, **changes)  # type: ignore[arg-type]


class Fixed:
    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def snapshot(self) -> Snapshot:
        return self.snap


class Alerts:
    """An alert dispatcher as reactor/alerts is, for metrics: it only has to count per sink."""

    def sink_counters(self) -> Mapping[str, Mapping[str, int]]:
        return {"webhook": {"sent": 5, "alerts": 9, "failed": 1, "dropped": 0, "queued": 2},
                "smtp": {"sent": 2, "alerts": 2, "failed": 0, "dropped": 1, "queued": 0}}


def test_live_gauges_come_from_the_snapshot_at_each_scrape() -> None:
    m = Metrics()
    source = Fixed(snapshot())
    m.watch(source)
    got = samples(m)
    assert got[("reactor_build_info", (("configured_mode", "auto"), ("mode", "binlog"),
                                       ("version", "9.9")))] == 1
    assert got[("reactor_breaker_state", (("process", "db"), ("state", "open")))] == 1
    assert got[("reactor_breaker_state", (("process", "db"), ("state", "closed")))] == 0
    assert got[("reactor_breaker_state", (("process", "web"), ("state", "closed")))] == 1
    assert got[("reactor_breaker_failures", (("process", "db"),))] == 3
    assert got[("reactor_breakers_open", ())] == 1
    assert got[("reactor_cycles_in_flight", ())] == 1
    assert got[("reactor_oldest_cycle_seconds", ())] >= 1
    assert got[("reactor_alarms_coalesced_total", ())] == 4
    assert got[("reactor_binlog_connected", ())] == 1
    assert got[("reactor_binlog_reconnects_total", ())] == 2
    assert got[("reactor_binlog_seconds_since_last_event", ())] == pytest.approx(0.4)
    assert got[("reactor_sweep_duration_seconds_count", ())] == 3
    assert got[("reactor_healthy", ())] == 1
    assert got[("reactor_degraded", (("condition", "stream_down"),))] == 0
    assert got[("process_resident_memory_bytes", ())] > 0

    source.snap = snapshot(conditions={"stream_down": "lost"})
    source.snap = replace(source.snap, source=replace(source.snap.source, connected=False))
    got = samples(m)  # the next scrape sees the new state
    assert got[("reactor_binlog_connected", ())] == 0
    assert got[("reactor_healthy", ())] == 0
    assert got[("reactor_degraded", (("condition", "stream_down"),))] == 1

    source.snap = snapshot("poll")
    got = samples(m)
    assert not [n for n, _ in got if n.startswith("reactor_binlog_")]  # no stream: absent


def test_alert_counters_are_read_from_any_object_with_sink_counters() -> None:
    m = Metrics()
    m.watch_alerts(Alerts())
    got = samples(m)
    assert got[("reactor_alerts_sent_total", (("sink", "webhook"),))] == 5
    assert got[("reactor_alerts_delivered_total", (("sink", "webhook"),))] == 9
    assert got[("reactor_alerts_failed_total", (("sink", "webhook"),))] == 1
    assert got[("reactor_alerts_queued", (("sink", "webhook"),))] == 2
    assert got[("reactor_alerts_sent_total", (("sink", "smtp"),))] == 2
    assert got[("reactor_alerts_dropped_total", (("sink", "smtp"),))] == 1


def test_every_metric_is_in_the_readme_table_and_the_table_names_no_other() -> None:
    """The README's "The metrics" table is the operator's reference: a family the daemon
    exposes (with every source of samples plugged in) must have its row, and a row must
    not name a metric that no longer exists."""
    m = Metrics()
    m.watch(Fixed(snapshot(dbus_calls={"RestartUnit": 1}, database_calls={"clear": 1})))
    m.watch_alerts(Alerts())
    for s in (step("detected"), step("restart_issued"), step("cleared")):
        m.on_step(s)
    m.on_notice(Notice(Happening.SWEEP_CAUGHT, "1 alarm", process_ids=(4,)))
    exposed = {f.name + ("_total" if f.type == "counter" else "")
               for f in text_string_to_metric_families(generate_latest(m.registry).decode())
               if f.name.startswith("reactor_")}
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    table = readme.split("### The metrics", 1)[1].split("\n#", 1)[0]
    first_cells = re.findall(r"^\| (`reactor_[^|]+)\|", table, re.MULTILINE)
    documented = {name for cell in first_cells for name in re.findall(r"`(reactor_[a-z_]+)`", cell)}
    assert exposed - documented == set(), "metrics missing from the README's table"
    assert documented - exposed == set(), "README rows for metrics the daemon does not expose"


def test_problems_name_every_reason_to_be_unhealthy() -> None:
    assert snapshot().problems() == []
    assert snapshot(ready=False).problems() == [
        "starting: the source has not connected and swept yet"]
    down = snapshot(conditions={"database_down": "cannot connect"}, bus_connected=False)
    assert down.problems() == ["database_down: cannot connect",
                               "bus_down: not connected to D-Bus"]


def test_the_status_document_and_its_summary_lines() -> None:
    cfg = parse_config(BASE + "[process.web]\nunit = web@1.service\n")
    m = Metrics()
    m.on_step(step("cleared"))
    doc = document(snapshot(), cfg, m.last, 0)
    rows = {r["name"]: r for r in doc["processes"]}
    assert rows["web"] == {"id": 7, "name": "web", "unit": "web@1.service", "breaker": "closed",
                           "in_flight": True, "last_action": "cleared: cleared detail",
                           "last_action_at": rows["web"]["last_action_at"]}
    assert rows["db"]["breaker"].startswith("open until ") and rows["db"]["last_action"] is None
    daemon = doc["daemon"]
    assert daemon["healthy"] and daemon["source"]["reconnects"] == 2
    assert daemon["cycles_in_flight"][0]["process_id"] == 7
    json.dumps(doc)  # serialisable as it is
    lines = summary(daemon, "")
    assert lines[1] == ("source: binlog stream connected at binlog.000002:1234; 0 s behind the "
                        "source; last event 0.4 s ago; 2 reconnect(s)")
    assert lines[2].endswith("alarms found by a sweep that the stream had not delivered: 0")
    assert summary(None, "[metrics] listen is off")[0] == "daemon: - ([metrics] listen is off)"


# ------------------------------------------------------------------ the listener


async def exchange(port: int, request: bytes, replies: int = 1) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    await writer.drain()
    out = []
    for _ in range(replies):
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"Content-Length: (\d+)", head)[1])  # type: ignore[index]
        body = await reader.readexactly(length) if not head.startswith(b"HEAD") else b""
        out.append(head + body)
    writer.close()
    return out


def test_the_listener_answers_each_path_and_keeps_connections_alive() -> None:
    async def main() -> None:
        m = Metrics()
        source = Fixed(snapshot())
        m.watch(source)
        cfg = parse_config(BASE)
        routes = Routes(render_metrics(m.registry),
                        lambda: document(source.snapshot(), cfg, m.last, m.caught),
                        lambda: source.snapshot().problems())
        port = free_port()
        server = MetricsServer("127.0.0.1", port, routes)
        await server.start()
        task = asyncio.create_task(server.serve())
        try:
            two = await exchange(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                                       b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 2)
            assert two[0].startswith(b"HTTP/1.1 200 OK") and b"reactor_breakers_open 1.0" in two[0]
            assert b"Content-Type: text/plain; version=0.0.4" in two[0]
            assert two[1].endswith(b"\r\n\r\nok\n")
            (om,) = await exchange(port, b"GET /metrics HTTP/1.1\r\nAccept: application/"
                                         b"openmetrics-text; version=1.0.0\r\n\r\n")
            assert b"application/openmetrics-text" in om and om.endswith(b"# EOF\n")
            (doc,) = await exchange(port, b"GET /status.json HTTP/1.0\r\n\r\n")
            assert json.loads(doc.split(b"\r\n\r\n", 1)[1])["daemon"]["pid"] == 1234
            source.snap = snapshot(conditions={"bus_down": "lost"})
            (sick,) = await exchange(port, b"GET /healthz HTTP/1.1\r\n\r\n")
            assert sick.startswith(b"HTTP/1.1 503 ") and sick.endswith(b"bus_down: lost\n")
            (missing,) = await exchange(port, b"GET /nope HTTP/1.1\r\n\r\n")
            assert missing.startswith(b"HTTP/1.1 404 ")
            (post,) = await exchange(port, b"POST /metrics HTTP/1.1\r\n\r\n")
            assert post.startswith(b"HTTP/1.1 405 ")
            (bad,) = await exchange(port, b"hello\r\n\r\n")
            assert bad.startswith(b"HTTP/1.1 400 ")
            # a second listener on the same port: the start fails naming the key
            with pytest.raises(ConfigError) as info:
                await MetricsServer("127.0.0.1", port, routes).start()
            assert info.value.problems == [f"[metrics] listen: cannot listen on 127.0.0.1:"
                                           f"{port}: Address already in use"]
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        with pytest.raises(OSError):  # closed with its task
            await asyncio.open_connection("127.0.0.1", port)

    asyncio.run(main())


def test_the_textfile_is_replaced_whole_and_written_once_more_at_stop(tmp_path: Path) -> None:
    m = Metrics()
    path = tmp_path / "reactor.prom"
    writer = TextfileWriter(str(path), 0.01, m.registry)
    writer.write_now()
    assert "reactor_cycles_total" in path.read_text()

    async def main() -> None:
        task = asyncio.create_task(writer.run())
        for _ in range(500):  # the writes every 0.01 s, not a timed assertion
            if writer.writes >= 3:
                break
            await asyncio.sleep(0.01)
        assert writer.writes >= 3
        m.on_step(step("cleared"))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert 'reactor_cycles_total{result="cleared"} 1.0' in path.read_text()  # the stop's write
    assert [p.name for p in tmp_path.iterdir()] == ["reactor.prom"]
    with pytest.raises(ConfigError) as info:
        TextfileWriter(str(tmp_path / "no" / "r.prom"), 1, m.registry).write_now()
    assert info.value.problems[0].startswith("[metrics] textfile: cannot write ")


# ------------------------------------------------------------------ contrib/


def exported_names() -> set[str]:
    """Every series name reactor exports, in binlog mode, with alerts counted."""
    m = Metrics()
    m.watch(Fixed(snapshot()))
    m.watch_alerts(Alerts())
    for name in ("restart_issued", "restarted", "health_ok", "cleared"):
        m.on_step(step(name, method="service"))
    return {name for name, _ in samples(m)}


def test_rules_and_dashboard_use_only_metrics_reactor_exports() -> None:
    exported = exported_names()
    for path in (RULES, DASHBOARD):
        used = set(re.findall(r"\breactor_[a-z_]+", path.read_text()))
        used -= {"reactor_dashboard", "reactor_rules"}
        assert used, path
        assert not used - exported, f"{path.name} names unknown metrics: {used - exported}"
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert all(p["targets"] and p["datasource"]["uid"] == "${datasource}" for p in panels)


def run_promtool(*args: str) -> str:
    try:
        done = promtool(*args)
    except LabUnavailable as exc:
        unavailable(str(exc))
        raise
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_promtool_accepts_the_rules_and_each_alert_fires_in_its_test() -> None:
    assert "SUCCESS: 9 rules found" in run_promtool("check", "rules", str(RULES))
    assert "SUCCESS" in run_promtool("test", "rules", str(RULE_TESTS))
    alerts = re.findall(r"- alert: (\w+)", RULES.read_text())
    tests = RULE_TESTS.read_text()
    for alert in alerts:  # a test where it fires, with its labels and annotations
        assert re.search(rf"alertname: {alert}\n\s+exp_alerts:\n\s+- exp_labels:", tests), alert


def test_the_rule_tests_fail_when_a_rule_does_not_fire(tmp_path: Path) -> None:
    """The promtool tests can fail: a rule that no longer fires on its series is caught."""
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text().replace('reactor_breaker_state{state="open"} == 1',
                                     'reactor_breaker_state{state="open"} == 2')
    (tmp_path / RULES.name).write_text(text)
    done = promtool("test", "rules", str(tmp_path / RULE_TESTS.name))
    assert done.returncode != 0 and "ReactorBreakerOpen" in done.stdout + done.stderr
