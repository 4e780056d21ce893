"""`reactor run` with [metrics]: a real Prometheus (Debian's binary, our own config and data
directory, loopback) scrapes it while real alarms are handled by the sandboxed systemd;
PromQL through Prometheus's HTTP API must show what happened. /healthz follows the
database going away and coming back; /status.json and `reactor status --json` agree; a
taken port and an unwritable textfile stop the start with a line naming the key."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab import LabUnavailable
from lab.mariadb import MariaDB, free_port
from lab.prometheus import Prometheus
from lab.sandbox import SystemdSandbox
from tests.conftest import REPO, Proc, unavailable, wait_for
from tests.rig import DB, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]
RULES = REPO / "contrib" / "prometheus" / "reactor-rules.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "reactor-dashboard.json"


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


@pytest.fixture
def own_rig(own_mariadb: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
            procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(own_mariadb, sandbox, tmp_path, procs)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[list[Prometheus]]:
    """Prometheus servers a test starts (start_prometheus), stopped after it."""
    started: list[Prometheus] = []
    yield started
    for server in started:
        server.stop()


def start_prometheus(started: list[Prometheus], base: Path, port: int) -> Prometheus:
    """Scraping reactor every 0.5 s and evaluating the shipped alerting rules as often."""
    try:
        server = Prometheus(base, [f"127.0.0.1:{port}"], interval=0.5, rule_files=[str(RULES)])
        started.append(server)
        return server.start()
    except LabUnavailable as exc:
        unavailable(str(exc))
        raise


OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with OPENER.open(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, reply.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_value(prom: Prometheus, promql: str, want: float, timeout: float = 20) -> None:
    """Until Prometheus's last scrape gives `want` (it scrapes every 0.5 s)."""
    seen: list[float | None] = []

    def check() -> bool:
        seen.append(prom.value(promql))
        return seen[-1] == want

    try:
        wait_for(check, timeout, interval=0.2, what=f"{promql} == {want}")
    except AssertionError:
        raise AssertionError(f"{promql}: wanted {want}, Prometheus says {seen[-1]}") from None


def reactor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def test_prometheus_sees_the_alarms_handled(rig: Rig, tmp_path: Path,
                                            prometheus: list[Prometheus]) -> None:
    """Three alarms: one cleared, one whose process has no unit (the process strategy
    fails, its breaker opens), one written by a client in STATEMENT format (the stream
    cannot read it: the sweep catches it, and retries the failed one). Prometheus,
    scraping every 0.5 s, sees each counter, the breaker, the stream's gauges and the
    latency histogram."""
    port = free_port()
    ok, _ = rig.add("ok")
    bad, bad_name = rig.add("bad", None)
    late, _ = rig.add("late")
    config = rig.config(monitor={"max_restart_failures": 1}, default={"max_attempts": 1},
                        metrics={"listen": f"127.0.0.1:{port}"})
    p = rig.start(config)
    prom = start_prometheus(prometheus, tmp_path / "prom", port)
    wait_value(prom, 'reactor_cycles_total{result="cleared"}', 0)
    wait_value(prom, 'reactor_binlog_connected', 1)
    wait_value(prom, 'reactor_build_info{mode="binlog",configured_mode="binlog"}', 1)
    wait_value(prom, 'reactor_breakers_open', 0)

    rig.alarm(ok)
    rig.alarm(bad)
    rig.wait_cleared(ok)
    rig.wait_step(bad, "breaker_open")
    rig.db.client("-e", "SET SESSION binlog_format = 'STATEMENT'; "
                  f"UPDATE {DB}.STATUS_PROCESS SET alarma = 1 WHERE process_id = {late}")
    rig.wait_cleared(late)

    expected = {
        'reactor_alarms_detected_total{source="binlog"}': 2,
        # the late alarm, and the failed one retried (its breaker open: skipped)
        'reactor_alarms_detected_total{source="sweep"}': 2,
        'reactor_cycles_total{result="cleared"}': 2,
        'reactor_cycles_total{result="cycle_failed"}': 1,
        'reactor_cycles_total{result="skipped"}': 1,
        'reactor_cycles_total{result="refused"}': 0,
        'reactor_restart_actions_total{strategy="service",result="ok"}': 2,
        'reactor_restart_actions_total{strategy="process",result="failed"}': 1,
        'reactor_sweep_caught_alarms_total': 1,
        'reactor_happenings_total{kind="sweep_caught"}': 1,
        f'reactor_breaker_state{{process="{bad_name}",state="open"}}': 1,
        f'reactor_breaker_state{{process="{bad_name}",state="closed"}}': 0,
        'reactor_breakers_open': 1,
        'reactor_cycles_in_flight': 0,
        'reactor_alarm_latency_seconds_count{step="cleared",source="binlog"}': 1,
        'reactor_alarm_latency_seconds_count{step="cleared",source="sweep"}': 1,
        'reactor_alarm_latency_seconds_count{step="restart_issued",source="sweep"}': 1,
        'reactor_binlog_connected': 1,
        'reactor_healthy': 1,
        'reactor_degraded{condition="stream_down"}': 0,
    }
    for promql, want in expected.items():
        wait_value(prom, promql, want)
    # the statement's sweep, and the one at start at least
    assert (prom.value("reactor_sweep_duration_seconds_count") or 0) >= 2
    assert (prom.value("reactor_binlog_transactions_total") or 0) >= 3
    assert prom.value("reactor_binlog_seconds_behind_source") is not None
    assert 0 <= (prom.value("reactor_binlog_seconds_since_last_event") or -1) < 5

    # the histogram holds the cleared alarm's own latency: every bucket at or above the
    # audit row's latency counts it, every bucket below does not
    latency = next(r["latency_ms"] for r in rig.audit(ok) if r["step"] == "cleared") / 1000
    buckets = {float(r["metric"]["le"]): float(r["value"][1]) for r in prom.query(
        'reactor_alarm_latency_seconds_bucket{step="cleared",source="binlog"}')}
    assert len(buckets) == 18, buckets
    assert buckets == {le: 1.0 if le >= latency else 0.0 for le in buckets}, (latency, buckets)
    quantile = prom.value('histogram_quantile(0.5, reactor_alarm_latency_seconds_bucket'
                          '{step="cleared",source="binlog"})')
    assert quantile is not None and 0 < quantile <= min(le for le in buckets if le >= latency)

    # the shipped rules, evaluated by this Prometheus: the breaker and the sweep's catch
    # fire, the stream's alerts do not
    def firing() -> set[str]:
        return {a["labels"]["alertname"] for a in prom.api("alerts")["alerts"]
                if a["state"] == "firing"}

    wait_for(lambda: {"ReactorBreakerOpen", "ReactorSweepCatchingAlarms"} <= firing(), 20,
             what="ReactorBreakerOpen and ReactorSweepCatchingAlarms firing")
    assert not firing() & {"ReactorStreamDisconnected", "ReactorStreamLagging", "ReactorDown",
                           "ReactorDegraded", "ReactorPolling"}, firing()
    # every dashboard query runs, and the latency, lag and per-minute panels have data
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            expr = target["expr"].replace("$instance", ".+").replace("$__rate_interval", "1m")
            result = prom.query(expr)
            if "alerts_" not in expr and "== 1" not in expr:
                assert result, (panel["title"], expr)
    assert p.stop() == 0


def test_status_json_matches_reactor_status(rig: Rig) -> None:
    """The same state seen by the daemon (/status.json, from its memory) and by `reactor
    status --json` (database, state file, D-Bus, and the daemon's /status.json): the
    fields both have are equal; status adds alarma, notes and the unit's state, and
    prints the source's lag and the sweep's catches under its table."""
    port = free_port()
    ok, name = rig.add("ok")
    bad, bad_name = rig.add("bad", None)
    config = rig.config(monitor={"max_restart_failures": 1}, default={"max_attempts": 1},
                        metrics={"listen": f"127.0.0.1:{port}"})
    state = Path(str(config).replace("c.ini", "c-state.json"))
    p = rig.start(config)
    rig.alarm(ok)
    rig.alarm(bad)
    rig.wait_cleared(ok)
    rig.wait_step(bad, "breaker_open")
    wait_for(lambda: state.exists() and bad_name in state.read_text(), what="breaker saved")

    status, body = get(port, "/status.json")
    assert status == 200
    served = json.loads(body)
    done = reactor("status", "--json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)

    assert set(served) == set(shown) == {"daemon", "processes"}
    for doc in (served, shown):
        doc["daemon"]["source"].pop("seconds_since_last_event")  # moves between the two
    assert shown["daemon"] == served["daemon"]
    daemon = served["daemon"]
    assert daemon["mode"] == "binlog" and daemon["healthy"] and daemon["ready"]
    assert daemon["source"]["connected"] is True and daemon["sweep_caught"] == 0
    assert daemon["counters"]["restarted"] == 1 and daemon["counters"]["failed"] == 1

    by_id = {r["id"]: r for r in shown["processes"]}
    assert {r["id"] for r in served["processes"]} == set(by_id)
    for row in served["processes"]:
        assert set(row) < set(by_id[row["id"]])
        assert {k: by_id[row["id"]][k] for k in row} == row
    mine = {r["id"]: r for r in served["processes"]}
    assert mine[ok]["last_action"].startswith("cleared: restarted")
    assert mine[bad]["breaker"].startswith("open until ")
    assert mine[ok]["in_flight"] is False
    assert by_id[ok]["unit_state"] == "active/running" and by_id[ok]["alarma"] == 0

    text = reactor("status", "--config", str(config)).stdout
    assert f" {name} " in text
    assert "s behind the source" in text and "binlog stream connected at binlog." in text
    assert "alarms found by a sweep that the stream had not delivered: 0" in text
    assert p.stop() == 0
    stopped = reactor("status", "--config", str(config)).stdout
    assert f"daemon: - (no answer from http://127.0.0.1:{port}/status.json" in stopped


def test_healthz_follows_the_database(own_rig: Rig, tmp_path: Path,
                                      prometheus: list[Prometheus]) -> None:
    """/healthz: 200 while the stream is connected, 503 naming the reason while the
    database is stopped, 200 again once it is back; Prometheus sees the stream go and come
    back, and the reconnect counted."""
    rig = own_rig
    port = free_port()
    config = rig.config(metrics={"listen": f"127.0.0.1:{port}"})
    p = rig.start(config)
    prom = start_prometheus(prometheus, tmp_path / "prom", port)
    assert get(port, "/healthz") == (200, "ok\n")
    wait_value(prom, "reactor_binlog_connected", 1)
    wait_value(prom, "reactor_binlog_reconnects_total", 0)

    rig.db.stop()
    code, why = wait_for(lambda: (r := get(port, "/healthz"))[0] == 503 and r, 30,
                         what="/healthz 503")
    assert "stream_down" in why, why
    assert json.loads(get(port, "/status.json")[1])["daemon"]["healthy"] is False
    wait_value(prom, "reactor_binlog_connected", 0)
    wait_value(prom, 'reactor_degraded{condition="stream_down"}', 1)
    wait_value(prom, "reactor_healthy", 0)

    rig.db.start()
    wait_for(lambda: get(port, "/healthz") == (200, "ok\n"), 60, what="/healthz 200 again")
    wait_value(prom, "reactor_binlog_connected", 1)
    wait_value(prom, 'reactor_degraded{condition="stream_down"}', 0)
    assert (prom.value("reactor_binlog_reconnects_total") or 0) >= 1
    assert p.stop() == 0


def test_a_taken_port_fails_the_start_naming_the_key(rig: Rig) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = rig.config(metrics={"listen": f"127.0.0.1:{port}"})
        done = reactor("run", "--config", str(config))
    assert done.returncode == 1, done.stderr
    assert (f"[metrics] listen: cannot listen on 127.0.0.1:{port}: Address already in use"
            in done.stderr), done.stderr
    assert "Traceback" not in done.stderr


def test_textfile_is_written_for_node_exporter(rig: Rig, tmp_path: Path) -> None:
    """[metrics] textfile: rewritten every textfile_interval, parseable, with the counts;
    its directory missing fails the start naming the key."""
    prom = tmp_path / "textfile" / "reactor.prom"
    prom.parent.mkdir()
    pid, _ = rig.add("ok")
    config = rig.config(metrics={"textfile": prom, "textfile_interval": 0.2})
    p = rig.start(config)
    rig.alarm(pid)
    rig.wait_cleared(pid)

    def cleared() -> dict[str, Any] | None:
        families = {f.name: f for f in text_string_to_metric_families(prom.read_text())}
        samples = {s.labels.get("result"): s.value for s in families["reactor_cycles"].samples}
        return families if samples.get("cleared") == 1 else None

    families = wait_for(cleared, what="the textfile showing the cleared cycle")
    assert {"reactor_alarm_latency_seconds", "reactor_build_info", "reactor_binlog_connected",
            "process_resident_memory_bytes"} <= set(families), sorted(families)
    assert [f.name for f in prom.parent.iterdir()] == ["reactor.prom"]  # no tmp left
    assert p.stop() == 0

    config = rig.config(metrics={"textfile": tmp_path / "missing" / "reactor.prom"},
                        file="bad.ini")
    done = reactor("run", "--config", str(config))
    assert done.returncode == 1
    assert "[metrics] textfile: cannot write" in done.stderr, done.stderr
