"""Many hosts, one database: three reactors, each with its own sandboxed systemd and its
own [monitor] host, on one MariaDB with sql/fleet.sql applied. Each acts only on its own
rows; the others write nothing for them; `reactor fleet` shows who is live and which
alarms wait with nobody to act on them. And the seed schema (no host column) is unchanged.
"""

from __future__ import annotations

import itertools
import json
import secrets
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lab import LabUnavailable
from lab.mariadb import SQL_DIR, MariaDB
from lab.sandbox import SystemdSandbox
from reactor.ownership import Ownership
from reactor.storage.queries import sweep_sql
from tests.conftest import Proc, start_mariadb, unavailable, wait_for, write_config
from tests.rig import FAST, SLEEPER, Rig

pytestmark = [pytest.mark.mariadb, pytest.mark.systemd]

DB = "v_process_monitor"
HOSTS = ("web1", "web2", "web3")
IDS = itertools.count(300)  # process ids, unique across the module's tests (one database)


@pytest.fixture(scope="module")
def fleet_db() -> Iterator[MariaDB]:
    base = Path(tempfile.mkdtemp(prefix="reactor-fleet-db-"))
    server = start_mariadb(base)
    try:
        server.setup_reactor_schema()
        server.load_sql(SQL_DIR / "fleet.sql")
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="module")
def sandboxes() -> Iterator[dict[str, SystemdSandbox]]:
    started: dict[str, SystemdSandbox] = {}
    bases = []
    try:
        for host in HOSTS:
            base = Path(tempfile.mkdtemp(prefix=f"reactor-sbx-{host}-"))
            bases.append(base)
            try:
                started[host] = SystemdSandbox(base).start()
            except LabUnavailable as exc:
                unavailable(str(exc))
        yield started
    finally:
        for sbx in started.values():
            sbx.stop()
        for base in bases:
            shutil.rmtree(base, ignore_errors=True)


@dataclass
class Fleet:
    db: MariaDB
    sbx: dict[str, SystemdSandbox]
    tmp: Path
    procs: list[Proc]
    tag: str

    def add(self, base: str, host: str | None, units_on: tuple[str, ...] = HOSTS) -> int:
        """A process row for `host` and a started unit of its name in each sandbox of
        `units_on` (the same unit name on several hosts: each has its own copy)."""
        pid = next(IDS)
        name = f"{base}-{self.tag}"
        self.db.execute("INSERT INTO PROCESE (process_id, process_name, host) VALUES "
                        "(%s, %s, %s)", (pid, name, host), database=DB)
        self.db.execute("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)", (pid,),
                        database=DB)
        for h in units_on:
            self.sbx[h].write_unit(f"{name}.service", SLEEPER)
            self.sbx[h].manager("StartUnit", "ss", f"{name}.service", "replace")
        return pid

    def name(self, pid: int) -> str:
        return str(self.db.execute("SELECT process_name FROM PROCESE WHERE process_id = %s",
                                   (pid,), database=DB)[0][0])

    def started_at(self, host: str, pid: int) -> int:
        value = self.sbx[host].unit_property(f"{self.name(pid)}.service",
                                             "ExecMainStartTimestamp", "Service")
        return int(value or 0)

    def config(self, host: str, index: int, **monitor: Any) -> Path:
        return write_config(
            self.tmp / f"{host}.ini", self.db,
            {"database": {"server_id": 500 + index},
             "monitor": {"mode": "binlog", "check_interval": 60, "host": host,
                         "fleet_interval": 0.5, **monitor},
             "systemd": {"bus": self.sbx[host].address, "call_timeout": 3, "job_timeout": 5}},
            {"default": FAST})

    def start(self, host: str, index: int) -> Proc:
        p = Proc(["run", "--config", str(self.config(host, index))])
        self.procs.append(p)
        p.wait_stderr(r"ready: mode=binlog")
        return p

    def alarm(self, pid: int) -> None:
        self.db.client("-e", f"UPDATE {DB}.STATUS_PROCESS SET alarma=1 WHERE process_id={pid}")

    def row(self, pid: int) -> tuple[int, str | None]:
        alarma, notes = self.db.execute("SELECT alarma, notes FROM STATUS_PROCESS WHERE "
                                        "process_id = %s", (pid,), database=DB)[0]
        return int(alarma), notes

    def audit(self, pid: int) -> list[tuple[str, str]]:
        return [(str(h), str(s)) for h, s in self.db.execute(
            "SELECT host, step FROM REACTOR_AUDIT WHERE process_id = %s ORDER BY id", (pid,),
            database=DB)]

    def wait_cleared(self, pid: int, host: str) -> None:
        wait_for(lambda: self.row(pid)[0] == 0 and (host, "cleared") in self.audit(pid),
                 20, what=f"process {pid} cleared by {host}")

    def sentinel(self, host: str) -> None:
        """An alarm of `host`'s own handled end to end: that reactor has read past
        everything committed before it."""
        pid = self.add("sentinel", host, units_on=(host,))
        self.alarm(pid)
        self.wait_cleared(pid, host)


@pytest.fixture
def fleet(fleet_db: MariaDB, sandboxes: dict[str, SystemdSandbox], tmp_path: Path,
          procs: list[Proc]) -> Fleet:
    return Fleet(fleet_db, sandboxes, tmp_path, procs, secrets.token_hex(3))


def fleet_json(fleet: Fleet, stale: float) -> dict[str, Any]:
    p = Proc(["fleet", "--json", "--stale", str(stale), "--config",
              str(fleet.config(HOSTS[0], 0))])
    fleet.procs.append(p)
    assert p.proc.wait(30) == 0, p.stderr
    return dict(json.loads("".join(p.lines_for(0.5))))


def test_each_reactor_acts_only_on_its_own_rows_and_fleet_shows_who_is_gone(
        fleet: Fleet) -> None:
    """Three reactors (web1, web2, web3), each with its own systemd where a unit of the same
    name runs. An alarm for web1's row restarts web1's copy only, is cleared once, by
    web1; web2 and web3 write nothing for it (no note, no audit row) and restart nothing,
    which their own later alarms (sentinels) prove they would have seen by then. A row
    with no host is taken by nobody. Then web2 stops cleanly and web3 is killed: `reactor
    fleet` shows both as not live and the alarm that waits on web3."""
    same = {h: fleet.add("svc", h) for h in HOSTS}  # one row per host, one unit name
    nobody = fleet.add("orphan", None)
    for i, host in enumerate(HOSTS):
        fleet.start(host, i)
    before = {h: fleet.started_at(h, same[h]) for h in HOSTS}

    fleet.alarm(same["web1"])
    fleet.wait_cleared(same["web1"], "web1")
    fleet.alarm(nobody)
    for host in ("web2", "web3"):
        fleet.sentinel(host)
    assert fleet.started_at("web1", same["web1"]) != before["web1"]
    for host in ("web2", "web3"):
        # web1's row shares its unit name with web2's and web3's: their copies untouched
        assert fleet.started_at(host, same["web1"]) == before[host]
    steps = fleet.audit(same["web1"])
    assert {h for h, _ in steps} == {"web1"}, steps
    assert [s for _, s in steps].count("cleared") == 1
    assert fleet.row(nobody)[0] == 1 and fleet.audit(nobody) == [], "nobody takes it"

    for host in ("web2", "web3"):
        fleet.alarm(same[host])
    for host in ("web2", "web3"):
        fleet.wait_cleared(same[host], host)
        assert {h for h, _ in fleet.audit(same[host])} == {host}
        assert fleet.started_at(host, same[host]) != before[host]
    fleet.sentinel("web1")
    # web1's copy was restarted once (its own alarm), not for web2's or web3's
    assert [s for h, s in fleet.audit(same["web1"])].count("restart_issued") == 1

    doc = fleet_json(fleet, stale=3)
    live = {r["host"]: r["live"] for r in doc["reactors"]}
    assert live == {"web1": True, "web2": True, "web3": True}, doc
    assert [w["process_id"] for w in doc["waiting_alarms"]] == [nobody]

    web2, web3 = fleet.procs[1], fleet.procs[2]
    assert web2.stop() == 0
    web3.signal(signal.SIGKILL)
    web3.proc.wait(10)
    fleet.alarm(same["web3"])
    fleet.sentinel("web1")

    def gone() -> dict[str, Any] | None:
        doc = fleet_json(fleet, stale=3)
        rows = {r["host"]: r for r in doc["reactors"]}
        return doc if not rows["web3"]["live"] else None

    doc = wait_for(gone, 20, interval=0.5, what="web3 not seen for 3 s")
    rows = {r["host"]: r for r in doc["reactors"]}
    assert rows["web1"]["live"] and rows["web1"]["state"] == "running"
    assert rows["web2"]["state"] == "stopped" and not rows["web2"]["live"]
    # live is judged on the exact age (> 3 s); seen_ago is shown rounded to 0.1 s
    assert rows["web3"]["state"] == "running" and rows["web3"]["seen_ago"] >= 3
    waiting = {w["process_id"]: w["host"] for w in doc["waiting_alarms"]}
    assert waiting == {nobody: None, same["web3"]: "web3"}, doc
    text = Proc(["fleet", "--stale", "3", "--config", str(fleet.config("web1", 0))])
    fleet.procs.append(text)
    assert text.proc.wait(30) == 0
    out = "".join(text.lines_for(0.5))
    assert "NOT SEEN (running)" in out and "web3" in out and "(no host)" in out, out


def test_the_sweep_selects_its_own_rows_by_the_host_index(fleet: Fleet) -> None:
    """With the host column, the sweep's query reads PROCESE by its by_host index (the
    server drives the join from there) instead of every STATUS_PROCESS row."""
    with fleet.db.connect(DB) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO PROCESE (process_id, process_name, host) VALUES "
                        "(%s, %s, %s)", [(i, f"bulk-{i}", f"h{i % 50}")
                                         for i in range(10_000, 12_000)])
        cur.executemany("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)",
                        [(i,) for i in range(10_000, 12_000)])
        cur.execute("ANALYZE TABLE PROCESE, STATUS_PROCESS")
        cur.fetchall()
        sql, params = sweep_sql(Ownership("h7", column=True))
        cur.execute("EXPLAIN " + sql, params)
        plan = {row[2]: row[5] for row in cur.fetchall()}  # table -> key
    assert plan.get("p") == "by_host", plan


def test_seed_schema_without_the_column_acts_on_every_row(db: MariaDB,
                                                          sandbox: SystemdSandbox,
                                                          tmp_path: Path,
                                                          procs: list[Proc]) -> None:
    """The seed schema (no host column): a reactor whose [monitor] host names no row acts on
    every alarm, as on a single host, and writes its audit rows under that name."""
    rig = Rig(db, sandbox, tmp_path, procs)
    pid, _ = rig.add("seed")
    rig.start(rig.config(monitor={"host": "some-other-host"}))
    rig.alarm(pid)
    rig.wait_cleared(pid)
    hosts = db.execute("SELECT DISTINCT host FROM REACTOR_AUDIT WHERE process_id = %s",
                       (pid,), database=DB)
    assert hosts == [("some-other-host",)]


def test_sweep_once_lists_only_this_hosts_alarms(fleet: Fleet) -> None:
    """`reactor sweep --once --dry-run` on web1 lists web1's alarms, not web2's."""
    mine = fleet.add("dry-mine", "web1", units_on=())
    theirs = fleet.add("dry-theirs", "web2", units_on=())
    for pid in (mine, theirs):
        fleet.alarm(pid)
    p = Proc(["sweep", "--once", "--dry-run", "--config", str(fleet.config("web1", 0))])
    fleet.procs.append(p)
    assert p.proc.wait(30) == 0, p.stderr
    ids = {line.split()[0] for line in p.lines_for(0.5)[1:]}
    assert str(mine) in ids and str(theirs) not in ids, ids
    for pid in (mine, theirs):
        fleet.db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = %s", (pid,),
                         database=DB)
