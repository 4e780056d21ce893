"""`reactor run` telling people, end to end: the real MariaDB, the sandboxed systemd, and
real receivers (Alertmanager, an SMTP server, a webhook and a DingTalk receiver on
loopback).

- an open breaker is an alert in Alertmanager with the right labels; its recovery resolves it;
- 1,000 processes failing at once (one UPDATE) are one message per sink, DingTalk's "too
  fast" answer included;
- a sink down for a while gets every alert once it is back, none twice;
- reactor killed with SIGKILL while alerts wait: they are sent after the restart;
- a flapping unit whose breaker keeps reopening is one breaker alert per cooldown;
- the database gone for longer than unreachable_after is a critical alert, resolved when
  the binlog stream is back.

"None twice" and "nothing more" are checked against a later sentinel alert that must
arrive, never against a pause.
"""

from __future__ import annotations

import os
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import LabUnavailable
from lab.alertmanager import Alertmanager
from lab.mariadb import MariaDB
from lab.receiver import Delivery, Receiver
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc, unavailable, wait_for
from tests.mailserver import MailServer
from tests.rig import DB, SLEEPER, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]

FAILING = "[Service]\nExecStart=/bin/false\n"
SECRET = "SECrun0123456789"
# how long a sink stays down in the outage test: as short as proves the point (several
# failed attempts at the retry timing below), a parameter to run it longer
OUTAGE = float(os.environ.get("REACTOR_TEST_ALERT_OUTAGE", "3"))
FAST_RETRY = {"retry_delay": 0.2, "retry_max_delay": 1, "timeout": 5}


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


@pytest.fixture(scope="module")
def alertmanager() -> Iterator[Alertmanager]:
    try:
        am = Alertmanager(tempfile.mkdtemp(prefix="reactor-am-")).start()
    except LabUnavailable as exc:
        unavailable(str(exc))
    yield am
    am.stop()


@pytest.fixture
def hook() -> Iterator[Receiver]:
    rx = Receiver().start()
    yield rx
    rx.stop()


def events(deliveries: list[Delivery], event: str | None = None) -> list[tuple[str, int]]:
    """(event, process_id) of every alert the webhook received, in order."""
    return [(a["event"], a["process_id"]) for d in deliveries if d.accepted
            for a in d.body["alerts"] if event in (None, a["event"]) and a["status"] == "firing"]


def failing_row(rig: Rig, base: str) -> int:
    """A process whose unit does not exist: with restart_strategy = service its cycle fails
    at once (NoSuchUnit)."""
    pid, _ = rig.add(base, unit=None)
    return pid


def config(rig: Rig, sinks: dict[str, dict[str, Any]], *, group_wait: float = 0.2,
           monitor: dict[str, Any] | None = None, file: str = "c.ini",
           default: dict[str, Any] | None = None) -> Path:
    sections: dict[str, dict[str, Any]] = {"alerts": {"group_wait": group_wait,
                                                      "unreachable_after": 1, **FAST_RETRY}}
    sections.update({f"alert.{name}": values for name, values in sinks.items()})
    return rig.config(monitor={"max_restart_failures": 100, **(monitor or {})},
                      default={"restart_strategy": "service", "max_attempts": 1,
                               "health_check_timeout": 0.5, **(default or {})},
                      sections=sections, file=file)


def test_an_open_breaker_is_an_alertmanager_alert_until_it_closes(
        rig: Rig, alertmanager: Alertmanager) -> None:
    pid, name = rig.add("brk", FAILING, start=False)
    cfg = config(rig, {"am": {"type": "alertmanager", "url": alertmanager.url}},
                 monitor={"max_restart_failures": 1, "circuit_reset_time": 4,
                          "check_interval": 1})  # the sweep brings the alarm to the trial
    rig.start(cfg)
    rig.alarm(pid)

    def mine(alertname: str) -> list[dict[str, Any]]:
        return [a for a in alertmanager.alerts() if a["labels"].get("process") == name
                and a["labels"]["alertname"] == alertname]

    [held] = wait_for(lambda: mine("ReactorBreakerOpen"), 20, what="the breaker alert in AM")
    labels = held["labels"]
    assert labels["severity"] == "critical" and labels["unit"] == f"{name}.service"
    assert labels["process_id"] == str(pid) and labels["host"] == os.uname().nodename
    assert held["annotations"]["summary"] == (f"breaker opened for {name}: not restarted "
                                              "until it resets")
    assert mine("ReactorCycleFailed")[0]["labels"]["severity"] == "major"

    rig.sbx.write_unit(f"{name}.service", SLEEPER)  # fixed: the breaker's trial passes
    rig.wait_step(pid, "breaker_closed", timeout=30)
    wait_for(lambda: not mine("ReactorBreakerOpen") and not mine("ReactorCycleFailed"), 20,
             what="both alerts resolved in AM")
    assert rig.row(pid)[0] == 0


def test_a_storm_of_1000_failures_is_one_message_per_sink(
        rig: Rig, alertmanager: Alertmanager, hook: Receiver, tmp_path: Path) -> None:
    ding = Receiver(secret=SECRET).start()
    ding.answers.append((200, {"errcode": 130101, "errmsg": "send too fast"}))
    mail = MailServer(tmp_path, user="reactor", password="mail-pw-9").start()
    try:
        base = 20_000
        rows = [(base + i, rig.name(f"storm{i}")) for i in range(1000)]
        with rig.db.connect(DB) as conn, conn.cursor() as cur:
            cur.executemany("INSERT INTO PROCESE VALUES (%s, %s)", rows)
            cur.executemany("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)",
                            [(pid,) for pid, _ in rows])
        sentinel = failing_row(rig, "after-storm")
        cfg = config(rig, {
            "am": {"type": "alertmanager", "url": alertmanager.url},
            "hook": {"type": "webhook", "url": hook.url},
            "ding": {"type": "dingtalk", "url": f"{ding.url}?access_token=tok-storm-1",
                     "secret": SECRET},
            "mail": {"type": "smtp", "host": "127.0.0.1", "port": mail.port,
                     "user": "reactor", "password": "mail-pw-9", "to": "ops@example.com",
                     "ca_file": mail.cert},
        }, group_wait=8)
        proc = rig.start(cfg)
        rig.db.execute(f"UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id BETWEEN {base} "
                       f"AND {base + 999}", database=DB)
        [storm] = hook.wait(1, timeout=90)
        proc.wait_stderr(r"alert sink am .*: delivered 1000 alert\(s\) in message", timeout=30)
        assert len(events([storm], "cycle_failed")) == 1000
        assert storm.body["title"] == (f"[MAJOR] {os.uname().nodename}: 1000 processes failed "
                                       "to restart")
        proc.wait_stderr(r"alert sink ding .*sending too fast", timeout=30)
        rig.alarm(sentinel)  # the next alert: each sink's second message
        hook.wait(2, timeout=60)
        assert events(hook.deliveries) == [("cycle_failed", base + i) for i in range(1000)] + [
            ("cycle_failed", sentinel)]
        assert len(hook.deliveries) == 2

        tries = ding.wait(3, timeout=60)
        assert [d.accepted for d in tries] == [False, True, True]  # too fast, then delivered
        assert all(d.signed for d in tries)
        assert tries[1].body == tries[0].body  # the same message, later
        assert tries[1].body["markdown"]["title"].endswith("1000 processes failed to restart")

        mails = mail.wait(2, timeout=60)
        assert len(mails) == 2
        assert mails[0]["Subject"].strip().endswith("1000 processes failed to restart")
        assert mails[0]["X-Reactor-Severity"] == "major"

        names = {name for _, name in rows}
        held = {a["labels"]["process"] for a in alertmanager.alerts()
                if a["labels"]["alertname"] == "ReactorCycleFailed"}
        assert held & names == names
    finally:
        ding.stop()
        mail.stop()


def test_a_sink_down_for_a_while_gets_every_alert_once_it_is_back(
        rig: Rig, hook: Receiver) -> None:
    first, second = failing_row(rig, "out1"), failing_row(rig, "out2")
    proc = rig.start(config(rig, {"hook": {"type": "webhook", "url": hook.url}}))
    hook.down()
    rig.alarm(first)
    proc.wait_stderr(r"alert sink hook .*delivery failed: ConnectError")
    failures = len(proc.err_lines)
    proc.wait_stderr(r"alert sink hook .*delivery failed", start=failures, timeout=OUTAGE + 10)
    time.sleep(OUTAGE)  # the outage itself: reactor keeps retrying meanwhile
    hook.up()
    hook.wait(1, timeout=30)
    rig.alarm(second)
    hook.wait(2, timeout=30)
    assert events(hook.deliveries) == [("cycle_failed", first), ("cycle_failed", second)]
    assert len(hook.deliveries) == 2


def test_alerts_queued_when_reactor_is_killed_are_sent_after_the_restart(
        rig: Rig, hook: Receiver) -> None:
    first, second = failing_row(rig, "kill1"), failing_row(rig, "kill2")
    cfg = config(rig, {"hook": {"type": "webhook", "url": hook.url}})
    proc = rig.start(cfg)
    hook.down()
    rig.alarm(first)
    proc.wait_stderr(r"alert sink hook .*delivery failed")
    spool = rig.tmp / "c-state-alerts" / "hook"
    assert len(list(spool.glob("*.json"))) == 1
    proc.signal(signal.SIGKILL)
    proc.proc.wait(10)
    hook.up()
    again = rig.start(cfg)
    again.wait_stderr(r"alert sink hook .*: 1 undelivered message\(s\) from before the start")
    hook.wait(1, timeout=30)
    rig.alarm(second)
    hook.wait(2, timeout=30)
    # the first process failed again after the restart (its alarm is still set): the
    # cooldown, kept in the state file, holds that second alert back
    assert events(hook.deliveries) == [("cycle_failed", first), ("cycle_failed", second)]
    assert rig.steps(first).count("cycle_failed") >= 2
    assert list(spool.glob("*.json")) == []


def test_a_flapping_unit_is_one_breaker_alert_per_cooldown(rig: Rig, hook: Receiver) -> None:
    flapping, _ = rig.add("flap", FAILING, start=False)
    later, _ = rig.add("flap-later", FAILING, start=False)
    proc = rig.start(config(rig, {"hook": {"type": "webhook", "url": hook.url}},
                            monitor={"max_restart_failures": 1, "circuit_reset_time": 1,
                                     "check_interval": 1}))
    rig.alarm(flapping)
    rig.wait_step(flapping, "breaker_open", count=3, timeout=40)  # reopened twice
    rig.alarm(later)
    wait_for(lambda: ("breaker_open", later) in events(hook.deliveries), 30,
             what="the second unit's breaker alert")
    assert events(hook.deliveries, "breaker_open").count(("breaker_open", flapping)) == 1
    assert events(hook.deliveries, "cycle_failed").count(("cycle_failed", flapping)) == 1
    # the sweeps (every second) that hand the failed alarm over again are retries, not
    # alarms the stream missed: no sweep_caught warning
    assert "sweep_caught" not in {e for e, _ in events(hook.deliveries)}
    assert "the stream had not delivered" not in proc.stderr


def test_the_database_gone_longer_than_unreachable_after_is_critical_until_it_is_back(
        own_mariadb: MariaDB, sandbox: SystemdSandbox, tmp_path: Path, procs: list[Proc],
        hook: Receiver) -> None:
    rig = Rig(own_mariadb, sandbox, tmp_path, procs)
    proc = rig.start(config(rig, {"hook": {"type": "webhook", "url": hook.url}}))
    proc.wait_stderr(r"binlog stream connected")
    own_mariadb.stop()
    wait_for(lambda: ("stream_down", None) in events(hook.deliveries), 30,
             what="the stream_down alert")
    [down] = [a for d in hook.deliveries for a in d.body["alerts"]
              if a["event"] == "stream_down"]
    assert down["severity"] == "critical" and down["summary"] == (
        "binlog stream down for more than 1 s")
    own_mariadb.start()
    wait_for(lambda: any(a["event"] == "stream_down" and a["status"] == "resolved"
                         for d in hook.deliveries for a in d.body["alerts"]), 60,
             what="the stream_down alert resolved")
