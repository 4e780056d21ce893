"""The binlog from replicas: a MariaDB primary and two GTID replicas set up by the lab
(lab/replication.py), reactor reading the stream from a replica ([binlog] servers) and
writing clears, notes and audit rows to the primary ([database]).

- alarms set on the primary are handled from replica A's stream;
- with reactor stopped, alarms come and go; `reactor watch`, on replica B with the
  daemon's state file, replays exactly those from the binlog (the GTID checkpoint taken
  on A means the same on B); `reactor run` on B handles the ones still set, once each;
- replica A killed under a running reactor: it fails over to B, and no alarm is lost or
  handled twice;
- a replica that does not log what it applies (log_slave_updates = OFF) is refused at
  start with a message that names the setting.
"""

from __future__ import annotations

import json
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import LabUnavailable
from lab.mariadb import MariaDB
from lab.replication import Topology
from lab.sandbox import SystemdSandbox
from tests.conftest import Proc, unavailable, wait_for, write_config
from tests.rig import FAST, SLEEPER

pytestmark = [pytest.mark.mariadb]

DB = "v_process_monitor"


def topology(base: Path, **kwargs: Any) -> Topology:
    try:
        topo = Topology(base, **kwargs).start()
    except LabUnavailable as exc:
        unavailable(str(exc))
    try:
        topo.primary.setup_reactor_schema()
        topo.sync()
    except BaseException:
        topo.cleanup()
        raise
    return topo


@pytest.fixture
def topo(tmp_path: Path) -> Iterator[Topology]:
    t = topology(Path(tempfile.mkdtemp(prefix="reactor-topo-", dir=tmp_path)))
    try:
        yield t
    finally:
        t.cleanup()


class World:
    def __init__(self, topo: Topology, sbx: SystemdSandbox, tmp: Path,
                 procs: list[Proc]) -> None:
        self.topo, self.sbx, self.tmp, self.procs = topo, sbx, tmp, procs
        self.tag = secrets.token_hex(3)
        self.next_id = 400
        self.state = tmp / "state.json"

    @property
    def primary(self) -> MariaDB:
        return self.topo.primary

    def add(self, base: str) -> int:
        pid, self.next_id = self.next_id, self.next_id + 1
        name = f"{base}-{self.tag}"
        self.primary.execute("INSERT INTO PROCESE VALUES (%s, %s)", (pid, name), database=DB)
        self.primary.execute("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)", (pid,),
                             database=DB)
        self.sbx.write_unit(f"{name}.service", SLEEPER)
        self.sbx.manager("StartUnit", "ss", f"{name}.service", "replace")
        return pid

    def config(self, servers: list[MariaDB], name: str = "c.ini") -> Path:
        return write_config(
            self.tmp / name, self.primary,
            {"binlog": {"servers": ", ".join(f"127.0.0.1:{s.port}" for s in servers)},
             "monitor": {"mode": "binlog", "check_interval": 60, "state_file": self.state},
             "systemd": {"bus": self.sbx.address, "call_timeout": 3, "job_timeout": 5}},
            {"default": FAST})

    def run(self, servers: list[MariaDB]) -> Proc:
        p = Proc(["run", "--config", str(self.config(servers))])
        self.procs.append(p)
        p.wait_stderr(r"ready: mode=binlog", timeout=30)
        return p

    def set(self, pid: int, value: int = 1) -> None:
        self.primary.execute("UPDATE STATUS_PROCESS SET alarma = %s WHERE process_id = %s",
                             (value, pid), database=DB)

    def detected(self, pid: int) -> list[str]:
        """The source of each cycle's detection of this process, from the primary."""
        return [str(s) for (s,) in self.primary.execute(
            "SELECT source FROM REACTOR_AUDIT WHERE process_id = %s AND step = 'detected' "
            "ORDER BY id", (pid,), database=DB)]

    def cleared(self, pid: int) -> None:
        def done() -> bool:
            alarma = self.primary.execute("SELECT alarma FROM STATUS_PROCESS WHERE "
                                          "process_id = %s", (pid,), database=DB)[0][0]
            steps = [s for (s,) in self.primary.execute(
                "SELECT step FROM REACTOR_AUDIT WHERE process_id = %s", (pid,), database=DB)]
            return alarma == 0 and "cleared" in steps
        wait_for(done, 30, what=f"process {pid} cleared")

    def sentinel(self) -> int:
        pid = self.add("sentinel")
        self.set(pid)
        self.cleared(pid)
        return pid


@pytest.fixture
def world(topo: Topology, sandbox: SystemdSandbox, tmp_path: Path,
          procs: list[Proc]) -> World:
    return World(topo, sandbox, tmp_path, procs)


@pytest.mark.systemd
def test_stream_from_a_replica_then_resume_on_another_by_gtid(world: World) -> None:
    a, b = world.topo.replicas
    # replicas' binlogs differ in their files and offsets (here B's: it rotated twice);
    # only the GTID means the same on both
    b.execute("FLUSH BINARY LOGS")
    b.execute("FLUSH BINARY LOGS")
    first = world.add("first")
    p = world.run([a, b])
    assert f"from 127.0.0.1:{a.port}" in p.wait_stderr("binlog stream connected").string
    world.set(first)
    world.cleared(first)
    assert world.detected(first) == ["binlog"]  # from A's stream, written to the primary
    assert p.stop() == 0
    saved = json.loads(world.state.read_text())["binlog"]
    assert saved["server"] == f"127.0.0.1:{a.port}" and saved["gtid"].startswith("0-1-")

    # while nothing reads: two alarms set and reset again, one left set
    gone1, gone2, kept = world.add("gone1"), world.add("gone2"), world.add("kept")
    for pid in (gone1, gone2):
        world.set(pid)
        world.set(pid, 0)
    world.set(kept)
    world.topo.sync()

    # `reactor watch` on B only, from the daemon's checkpoint (taken on A): the binlog
    # holds exactly those three (the sweep finds only `kept`, which is still set)
    watch = Proc(["watch", "--config", str(world.config([b], "watch.ini")),
                  "--state-file", str(world.state)])
    world.procs.append(watch)
    seen: list[tuple[int, str]] = []
    while len(seen) < 3:
        line = json.loads(watch.line(timeout=20))
        seen.append((int(line["process_id"]), str(line["source"])))
    assert f"from 127.0.0.1:{b.port}" in watch.wait_stderr("binlog stream connected").string
    assert sorted(seen) == sorted([(gone1, "binlog"), (gone2, "binlog"), (kept, "binlog")]) \
        or sorted(seen) == sorted([(gone1, "binlog"), (gone2, "binlog"), (kept, "sweep")]), seen
    assert first not in [pid for pid, _ in seen], "an alarm read before the stop came again"
    watch.signal()
    assert watch.proc.wait(20) == 0
    # the watch's checkpoint moved past them: restore the daemon's to replay for `run` too
    world.state.write_text(json.dumps({"binlog": saved}))

    p2 = world.run([b])
    world.cleared(kept)
    world.sentinel()
    assert world.detected(kept) == [world.detected(kept)[0]] and len(world.detected(kept)) == 1
    assert world.detected(gone1) == [] and world.detected(gone2) == [], \
        "alarms reset while reactor was stopped restarted something"
    assert world.detected(first) == ["binlog"], "an alarm handled before the stop came again"
    assert "gtid" in json.loads(world.state.read_text())["binlog"]
    assert p2.stop() == 0


@pytest.mark.systemd
def test_replica_killed_under_a_running_reactor_fails_over_without_loss(world: World) -> None:
    a, b = world.topo.replicas
    before, during = world.add("before"), [world.add(f"during{i}") for i in range(3)]
    quick = world.add("quick")
    p = world.run([a, b])
    world.set(before)
    world.cleared(before)
    # A stops sending (frozen, then killed): the alarms set meanwhile (and `quick`, reset
    # at once: only a stream can see that one) are in B's binlog, after the checkpoint
    a.freeze()
    for pid in during:
        world.set(pid)
    world.set(quick)
    world.set(quick, 0)
    world.topo.sync(replicas=[b])
    a.kill()
    p.wait_stderr(rf"trying 127.0.0.1:{b.port}", timeout=30)
    p.wait_stderr(rf"binlog stream reconnected at .* from 127.0.0.1:{b.port}", timeout=30)
    for pid in during:
        world.cleared(pid)
    world.sentinel()
    assert world.detected(before) == ["binlog"], "handled twice after the failover"
    for pid in during:
        assert len(world.detected(pid)) == 1, (pid, world.detected(pid))
    assert world.detected(quick) == ["binlog"], "the stream from B lost an alarm"
    assert p.stop() == 0


def test_a_replica_without_log_slave_updates_is_refused(tmp_path: Path) -> None:
    t = topology(tmp_path / "topo", replicas=1,
                 replica_args=("--log-slave-updates=OFF", "--gtid-strict-mode=ON"))
    try:
        t.primary.load_sql(Path(__file__).resolve().parents[1] / "sql" / "fleet.sql")
        t.sync()
        config = write_config(tmp_path / "c.ini", t.primary, {
            "binlog": {"servers": f"127.0.0.1:{t.replicas[0].port}"},
            "monitor": {"mode": "binlog", "state_file": tmp_path / "state.json"}})
        p = Proc(["run", "--config", str(config)])
        assert p.proc.wait(30) == 4, p.stderr
        assert "log_slave_updates = OFF" in p.stderr and "[binlog] servers" in p.stderr
    finally:
        t.cleanup()
