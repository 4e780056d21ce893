"""The binlog source when the server misbehaves: restarted, frozen, purged, unsuitable.
Each test has a server of its own (`own_mariadb`)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from tests.conftest import Proc, start_mariadb, write_config
from tests.test_watch import DB, alarm_of, sentinel, watch

pytestmark = pytest.mark.mariadb


def test_server_restarted_mid_stream(own_mariadb: MariaDB, tmp_path: Path,
                                     procs: list[Proc]) -> None:
    """A clean restart of the server: the stream reconnects by itself, resumes from its last
    transaction boundary, and an alarm set right after the restart is delivered once."""
    db = own_mariadb
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
    assert alarm_of(p.line())["process_id"] == 1
    db.restart()
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    got = alarm_of(p.line(timeout=20))
    # the stream replays it from its boundary, while the sweep after the reconnect may
    # read the row first: either one, but once (the sentinel and the silence below)
    assert (got["process_id"], got["source"]) in ((2, "binlog"), (2, "sweep"))
    p.wait_stderr("binlog stream lost")
    p.wait_stderr("binlog stream reconnected")
    sentinel(db, p, 3)
    assert p.lines_for(0.3) == []


def test_server_killed_and_back_after_a_while(own_mariadb: MariaDB, tmp_path: Path,
                                              procs: list[Proc]) -> None:
    """A crashed server (SIGKILL) that stays down for a few reconnect attempts."""
    db = own_mariadb
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    db.kill()
    p.wait_stderr("binlog stream lost")
    time.sleep(1.5)  # several failed reconnects, each logged with its backoff delay
    db.start()
    p.wait_stderr("binlog stream reconnected", timeout=20)
    sentinel(db, p, 2)


def test_frozen_server_is_noticed_by_the_heartbeat(own_mariadb: MariaDB, tmp_path: Path,
                                                   procs: list[Proc]) -> None:
    """An idle stream stays up on the server's heartbeats alone; SIGSTOP: the TCP connection
    stays open but no heartbeat comes; the read timeout (2.5 heartbeats) declares the stream
    dead. After SIGCONT it recovers by itself."""
    db = own_mariadb
    p = watch(procs, write_config(tmp_path / "c.ini", db, {"database": {"heartbeat": 0.4}}))
    time.sleep(2.0)  # 5 heartbeat periods, 2 read timeouts: no row event, only heartbeats
    assert "binlog stream lost" not in p.stderr and "reconnect" not in p.stderr, p.stderr
    db.freeze()
    try:
        p.wait_stderr("binlog stream lost", timeout=10)
    finally:
        db.thaw()
    p.wait_stderr("binlog stream reconnected", timeout=20)
    sentinel(db, p, 3)


def test_purged_checkpoint_restarts_from_current_position_and_sweeps(
        own_mariadb: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """Error 1236: the saved position's file was purged while the watcher was stopped.
    ERROR line, restart from the current position, and the sweep finds the alarm."""
    db = own_mariadb
    config = write_config(tmp_path / "c.ini", db)
    state = tmp_path / "state.json"
    p = watch(procs, config, "--state-file", str(state))
    assert p.stop() == 0
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    db.execute("FLUSH BINARY LOGS")
    current = db.execute("SHOW MASTER STATUS")[0][0]
    deadline = time.monotonic() + 10
    while len(db.execute("SHOW BINARY LOGS")) > 1:  # InnoDB may hold the old file a moment
        assert time.monotonic() < deadline, "the server kept the old binlog file"
        db.execute(f"PURGE BINARY LOGS TO '{current}'")
        time.sleep(0.1)
    assert json.loads(state.read_text())["binlog"]["file"] != current
    p2 = watch(procs, config, "--state-file", str(state))
    p2.wait_stderr(r"ERROR .*binlog position .* is gone")
    got = alarm_of(p2.line())
    assert (got["process_id"], got["source"]) == (2, "sweep")
    sentinel(db, p2, 3)


def test_auto_mode_falls_back_to_polling_without_row_metadata(tmp_path: Path,
                                                              procs: list[Proc]) -> None:
    """MariaDB 10.11 defaults (MIXED, no row metadata): auto polls, saying what is missing;
    the poller still finds alarms set by a client."""
    db = start_mariadb(tmp_path / "db", binlog_args=("--log-bin=binlog",))
    try:
        db.setup_reactor_schema()
        config = write_config(tmp_path / "c.ini", db, {"monitor": {"check_interval": 0.2}})
        p = watch(procs, config)
        warning = p.wait_stderr(r"WARNING .*binlog not usable, falling back to polling").string
        assert "binlog_format is MIXED, needs ROW" in warning
        assert "binlog_row_metadata is NO_LOG, needs FULL" in warning
        db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 3", database=DB)
        got = alarm_of(p.line())
        assert (got["process_id"], got["source"]) == (3, "poll")
        assert p.lines_for(0.5) == []  # later polls do not repeat it
    finally:
        db.cleanup()


def test_lower_case_table_names_server_is_streamed(tmp_path: Path, procs: list[Proc]) -> None:
    """lower_case_table_names = 1 (tables stored as status_process, procese): the stream
    still sees the alarms, with their names (a rename in PROCESE included), not only the
    sweep every check_interval."""
    db = start_mariadb(tmp_path / "db", extra_args=("--lower-case-table-names=1",))
    try:
        db.setup_reactor_schema()
        config = write_config(tmp_path / "c.ini", db, {"monitor": {"mode": "binlog"}})
        p = watch(procs, config)
        db.execute("UPDATE PROCESE SET process_name = 'renamed' WHERE process_id = 2",
                   database=DB)
        db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
        got = alarm_of(p.line())
        assert (got["process_id"], got["process_name"], got["source"]) == \
            (2, "renamed", "binlog")
    finally:
        db.cleanup()


def test_binlog_mode_refuses_an_unsuitable_server(tmp_path: Path) -> None:
    """mode = binlog on a server without the binlog: exit 4 and one line naming it."""
    db = start_mariadb(tmp_path / "db", binlog_args=())
    try:
        db.setup_reactor_schema()
        config = write_config(tmp_path / "c.ini", db, {"monitor": {"mode": "binlog"}})
        p = Proc(["watch", "--config", str(config)])
        assert p.proc.wait(20) == 4
        lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1, lines
        assert "mode = binlog" in lines[0] and "log_bin is OFF, needs ON" in lines[0]
    finally:
        db.cleanup()


def test_account_without_replication_grant_polls(own_mariadb: MariaDB, tmp_path: Path,
                                                 procs: list[Proc]) -> None:
    """A suitable server but an account that may not read the binlog: auto polls and the
    warning names the missing grant. REPLICATION SLAVE ADMIN is another privilege (it
    administers replicas) and does not let an account read the binlog."""
    db = own_mariadb
    db.execute("REVOKE REPLICATION SLAVE ON *.* FROM 'reactor'@'localhost'")
    db.execute("GRANT REPLICATION SLAVE ADMIN ON *.* TO 'reactor'@'localhost'")
    config = write_config(tmp_path / "c.ini", db, {"monitor": {"check_interval": 0.2}})
    p = watch(procs, config)
    assert "lacks REPLICATION SLAVE" in p.wait_stderr("falling back to polling").string
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
    assert alarm_of(p.line())["source"] == "poll"


def kill_binlog_dumps(db: MariaDB) -> int:
    """End the server side of every binlog stream (as a server restart would)."""
    ids = [row[0] for row in db.execute("SHOW PROCESSLIST") if row[4] == "Binlog Dump"]
    for thread in ids:
        db.execute(f"KILL {thread}")
    return len(ids)


@pytest.mark.parametrize("mode", ["auto", "binlog"])
def test_stream_refused_after_start(own_mariadb: MariaDB, tmp_path: Path, procs: list[Proc],
                                    mode: str) -> None:
    """The grant is revoked while the watcher streams, then the stream has to reconnect:
    the server refuses the dump (error 1227) and will go on refusing. Not retried forever:
    an ERROR naming the grant, then auto polls and binlog mode exits 4 (server unsuitable)."""
    db = own_mariadb
    config = write_config(tmp_path / "c.ini", db, {"monitor": {"mode": mode,
                                                               "check_interval": 0.2}})
    p = watch(procs, config)
    db.execute("REVOKE REPLICATION SLAVE ON *.* FROM 'reactor'@'localhost'")
    assert kill_binlog_dumps(db) == 1
    error = p.wait_stderr(r"ERROR .*binlog stream refused").string
    assert "GRANT REPLICATION SLAVE" in error and "1227" in error
    if mode == "binlog":
        assert p.proc.wait(20) == 4
        last = [ln for ln in p.stderr.splitlines() if ln.strip()][-1]
        assert last.startswith("reactor: ") and "REPLICATION SLAVE" in last, last
        return
    p.wait_stderr("falling back to polling")
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
    assert alarm_of(p.line())["source"] == "poll"
    assert p.lines_for(0.5) == []
    assert sum("binlog stream refused" in ln for ln in p.err_lines) == 1  # not retried


def test_start_sweep_runs_when_the_stream_cannot_connect(own_mariadb: MariaDB,
                                                         tmp_path: Path,
                                                         procs: list[Proc]) -> None:
    """An alarm already set at start is handled even while the stream cannot connect (here
    the account may open only 2 connections: the queries get theirs, the stream's second
    one is refused), not after the first check_interval (60 s in these tests)."""
    db = own_mariadb
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
    db.execute("ALTER USER 'reactor'@'localhost' WITH MAX_USER_CONNECTIONS 2")
    config = write_config(tmp_path / "c.ini", db, {"monitor": {"mode": "binlog"}})
    p = Proc(["watch", "--config", str(config)])
    procs.append(p)
    got = alarm_of(p.line(timeout=10))
    assert (got["process_id"], got["source"]) == (1, "sweep")
    p.wait_stderr("binlog stream lost")
    assert "binlog stream connected" not in p.stderr


def test_duplicate_server_id(own_mariadb: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """Two readers with one server_id: the server drops the older stream (error 4052) each
    time the other connects. Each says so with an ERROR naming the setting, and their
    reconnects slow down (capped backoff) instead of evicting each other every 0.1 s."""
    db = own_mariadb
    config = write_config(tmp_path / "c.ini", db)
    first = watch(procs, config)
    second = watch(procs, config)  # the same --server-id: [database] server_id + 1
    error = first.wait_stderr(r"ERROR .*server_id").string
    assert "[database] server_id" in error and "4052" in error, error
    start = [len(first.err_lines), len(second.err_lines)]
    time.sleep(4)
    reconnects = sum(
        sum("binlog stream reconnected" in ln for ln in p.err_lines[n:])
        for p, n in zip((first, second), start, strict=True))
    # backoff 0.1, 0.2, 0.4 ... for each: about 6 in 4 s; without it about 40
    assert 1 <= reconnects <= 12, (first.stderr, second.stderr)
    second.wait_stderr(r"ERROR .*\[database\] server_id")


def test_poll_mode_survives_a_database_restart(own_mariadb: MariaDB, tmp_path: Path,
                                               procs: list[Proc]) -> None:
    """mode = poll: a failed poll is logged once, polling resumes when the server is back."""
    db = own_mariadb
    config = write_config(tmp_path / "c.ini", db, {"monitor": {"mode": "poll",
                                                               "check_interval": 0.1}})
    p = watch(procs, config)
    db.kill()
    p.wait_stderr("poll failed")
    db.start()
    p.wait_stderr("poll succeeded again", timeout=20)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 4", database=DB)
    assert alarm_of(p.line())["process_id"] == 4


def test_server_crash_then_reused_table_ids(own_mariadb: MariaDB, tmp_path: Path,
                                            procs: list[Proc]) -> None:
    """SIGKILL leaves the binlog file without a closing RotateEvent, and the restarted
    server gives table ids out again from the start, to other tables. A reader that
    resumes before the crash learns STATUS_PROCESS's id in the old file and meets it again
    in the new one on another table: those rows must not be decoded as STATUS_PROCESS
    (regression: they became phantom alarms, or killed the reader on garbage lengths)."""
    db = own_mariadb
    for i in range(8):  # STATUS_PROCESS's layout, so that a wrong decoding looks plausible
        db.execute(f"CREATE TABLE t{i} (id INT PRIMARY KEY, a TINYINT, b TINYINT, "
                   "c VARCHAR(100))", database=DB)
    config = write_config(tmp_path / "c.ini", db)
    state = tmp_path / "state.json"
    p = watch(procs, config, "--state-file", str(state))
    assert p.stop() == 0
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    status_ids = table_ids(db, "STATUS_PROCESS")
    db.kill()
    db.start()
    for i in range(8):  # other tables take the low ids again, STATUS_PROCESS's among them
        db.execute(f"INSERT INTO t{i} VALUES ({50 + i}, 1, 0, 'not an alarm')", database=DB)
    # the precondition this test is about: another table now carries STATUS_PROCESS's id
    assert status_ids & {i for t in range(8) for i in table_ids(db, f"t{t}")}
    db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = 2", database=DB)
    p2 = watch(procs, config, "--state-file", str(state))
    got = alarm_of(p2.line())
    assert (got["process_id"], got["source"]) == (2, "binlog")
    sentinel(db, p2, 3)
    assert "could not be read" not in p2.stderr


def table_ids(db: MariaDB, table: str) -> set[int]:
    """The table ids the current binlog file's Table_map events give `table`."""
    current = db.execute("SHOW MASTER STATUS")[0][0]
    found = set()
    for row in db.execute(f"SHOW BINLOG EVENTS IN '{current}'"):
        info = str(row[5])
        if row[2] == "Table_map" and info.endswith(f".{table})"):
            found.add(int(info.split()[1]))
    return found
