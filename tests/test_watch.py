"""`reactor watch` against a real MariaDB: what is an alarm, each alarm once, nothing lost.

Each test ends with a *sentinel* alarm where it asserts that something did NOT happen: the
stream delivers in commit order, so once the sentinel is printed every earlier change has
been read and judged.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from tests.conftest import REPO, Proc, wait_for, write_config

pytestmark = pytest.mark.mariadb
DB = "v_process_monitor"


def watch(procs: list[Proc], config: Path, *extra: str) -> Proc:
    p = Proc(["watch", "--config", str(config), *extra])
    procs.append(p)
    p.wait_stderr("watching for alarms")
    return p


def alarm_of(line: str) -> dict[str, object]:
    return dict(json.loads(line))


def sentinel(server: MariaDB, p: Proc, pid: int = 4) -> None:
    """Raise an alarm on `pid` and require that it is the next line printed."""
    server.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = %s", (pid,),
                   database=DB)
    got = alarm_of(p.line())
    assert got["process_id"] == pid, f"expected the sentinel {pid}, got {got}"


def test_alarm_set_with_pymysql_is_printed_once(db: MariaDB, tmp_path: Path,
                                                procs: list[Proc]) -> None:
    """An UPDATE alarma=1 from PyMySQL is one JSON line with id, name, source and time."""
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    before = time.time()
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    got = alarm_of(p.line())
    assert got["process_id"] == 2
    assert got["process_name"] == "apache2"
    assert got["source"] == "binlog"
    assert isinstance(got["detected_at"], float) and got["detected_at"] >= before - 0.01
    assert str(got["binlog_position"]).startswith("binlog.")
    sentinel(db, p)


def test_alarm_set_with_mariadb_client_is_printed(db: MariaDB, tmp_path: Path,
                                                  procs: list[Proc], mariadb_client: str) -> None:
    """The stock `mariadb` client, as an operator would use it."""
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    db.client("-e", f"UPDATE {DB}.STATUS_PROCESS SET alarma=1 WHERE process_id=3")
    got = alarm_of(p.line())
    assert (got["process_id"], got["process_name"], got["source"]) == (3, "postfix", "binlog")


def test_insert_with_alarm_is_an_alarm(db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """A new process inserted already in alarm, with its PROCESE row in the same transaction:
    the name comes from the stream, in commit order."""
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    with db.connect(DB) as conn, conn.cursor() as cur:
        conn.begin()
        cur.execute("INSERT INTO PROCESE VALUES (10, 'fresh')")
        cur.execute("INSERT INTO STATUS_PROCESS (process_id, alarma) VALUES (10, 1)")
        conn.commit()
    got = alarm_of(p.line())
    assert (got["process_id"], got["process_name"]) == (10, "fresh")


def test_changes_that_are_not_alarms(db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """notes-only updates, 1->0, an update that leaves alarma at 1, PROCESE edits, a look-alike
    table in the same schema and a STATUS_PROCESS table in another schema print nothing."""
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
    db.execute("CREATE TABLE IF NOT EXISTS LOOKALIKE (process_id INT PRIMARY KEY, alarma INT)",
               database=DB)
    db.execute("CREATE DATABASE IF NOT EXISTS other_schema")
    db.execute("CREATE TABLE IF NOT EXISTS other_schema.STATUS_PROCESS "
               "(process_id INT PRIMARY KEY, alarma TINYINT, notes VARCHAR(100))")
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    p.lines_for(0.3)  # the start-up sweep prints process 1, already in alarm
    for sql in (
        "UPDATE STATUS_PROCESS SET notes = 'checked' WHERE process_id = 2",
        "UPDATE STATUS_PROCESS SET notes = 'still bad' WHERE process_id = 1",
        "UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = 1",
        "UPDATE STATUS_PROCESS SET sound = 1 WHERE process_id = 3",
        "UPDATE PROCESE SET process_name = 'postfix2' WHERE process_id = 3",
        "INSERT INTO LOOKALIKE VALUES (2, 1)",
        "UPDATE LOOKALIKE SET alarma = 1 WHERE process_id = 2",
        "REPLACE INTO other_schema.STATUS_PROCESS VALUES (2, 1, 'x')",
        "INSERT INTO PROCESE VALUES (11, 'quiet')",
        "INSERT INTO STATUS_PROCESS (process_id, alarma) VALUES (11, 0)",
    ):
        db.execute(sql, database=DB)
    sentinel(db, p)
    assert p.lines_for(0.3) == []
    db.execute("DROP TABLE LOOKALIKE", database=DB)


def test_rename_is_seen_before_a_later_alarm(db: MariaDB, tmp_path: Path,
                                             procs: list[Proc]) -> None:
    """The name cache follows PROCESE through the stream: no stale name after a rename."""
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    db.execute("UPDATE PROCESE SET process_name = 'postfix-new' WHERE process_id = 3", database=DB)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 3", database=DB)
    assert alarm_of(p.line())["process_name"] == "postfix-new"


def test_one_update_raising_1000_alarms(db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """1,000 rows set by one UPDATE -> 1,000 alarms, each exactly once, while sweeps run."""
    with db.connect(DB) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO PROCESE VALUES (%s, %s)",
                        [(i, f"bulk-{i}") for i in range(1000, 2000)])
        cur.executemany("INSERT INTO STATUS_PROCESS (process_id, alarma) VALUES (%s, 0)",
                        [(i,) for i in range(1000, 2000)])
    config = write_config(tmp_path / "c.ini", db, {"monitor": {"check_interval": 0.2}})
    p = watch(procs, config)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id >= 1000", database=DB)
    seen = [alarm_of(p.line()) for _ in range(1000)]
    ids = [a["process_id"] for a in seen]
    assert sorted(ids) == list(range(1000, 2000))
    assert {a["source"] for a in seen} <= {"binlog", "sweep"}
    assert all(a["process_name"] == f"bulk-{a['process_id']}" for a in seen)
    # several sweeps run meanwhile: they must not repeat any of them
    assert p.lines_for(0.6) == []
    sentinel(db, p)


def test_alarms_raised_while_stopped_are_replayed_from_the_checkpoint(
        db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """With a state file, the stream resumes at the saved position: alarms set while the
    watcher was down are delivered, each once, including one set and cleared (which only
    the replay can see). The start-up sweep runs alongside the replay, so an alarm still
    set may come from either of them."""
    config = write_config(tmp_path / "c.ini", db)
    state = tmp_path / "watch-state.json"
    p = watch(procs, config, "--state-file", str(state))
    sentinel(db, p, 4)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = 4", database=DB)
    time.sleep(0.2)
    assert p.stop() == 0
    saved = json.loads(state.read_text())["binlog"]
    assert saved["file"].startswith("binlog.") and saved["pos"] > 4
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 3", database=DB)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = 3", database=DB)
    p2 = watch(procs, config, "--state-file", str(state))
    got = {a["process_id"]: a["source"] for a in (alarm_of(p2.line()) for _ in range(2))}
    assert got.keys() == {2, 3}
    assert got[3] == "binlog"  # set and cleared while stopped: only in the binlog
    assert got[2] in ("binlog", "sweep")
    assert p2.lines_for(0.5) == []  # neither source repeats what the other delivered
    sentinel(db, p2)


def test_alarms_raised_while_stopped_are_found_by_the_start_sweep(
        db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """Without a checkpoint the stream starts at the current position; the sweep at start
    finds what is already in alarm."""
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id IN (1, 3)", database=DB)
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    got = sorted((a["process_id"], a["source"]) for a in map(alarm_of, (p.line(), p.line())))
    assert got == [(1, "sweep"), (3, "sweep")]
    sentinel(db, p)


def test_flush_binary_logs(db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """A binlog rotation between alarms loses nothing and repeats nothing."""
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
    assert alarm_of(p.line())["process_id"] == 1
    for _ in range(3):
        db.execute("FLUSH BINARY LOGS")
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
    got = alarm_of(p.line())
    assert got["process_id"] == 2
    file_now = db.execute("SHOW MASTER STATUS")[0][0]
    assert str(got["binlog_position"]).startswith(file_now + ":")
    sentinel(db, p)


def test_statement_based_session_triggers_a_sweep(db: MariaDB, tmp_path: Path,
                                                  procs: list[Proc]) -> None:
    """A client that switches its session to STATEMENT format writes SQL text, not rows:
    the stream cannot decode it, so it asks for a sweep, which finds the alarm."""
    p = watch(procs, write_config(tmp_path / "c.ini", db))
    with db.connect(DB) as conn, conn.cursor() as cur:
        cur.execute("SET SESSION binlog_format = 'STATEMENT'")
        cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2")
    got = alarm_of(p.line())
    assert (got["process_id"], got["source"]) == (2, "sweep")
    p.wait_stderr("logged as SQL text")


def test_dead_database_at_start_is_one_clear_line(tmp_path: Path) -> None:
    """Nothing listens on the port: exit 3 and one line saying so."""
    from lab.mariadb import free_port

    class Nowhere:
        port = free_port()

    config = write_config(tmp_path / "c.ini", Nowhere())  # type: ignore[arg-type]
    p = Proc(["watch", "--config", str(config)])
    assert p.proc.wait(20) == 3
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "database unavailable" in lines[0] and "Can't connect" in lines[0]


@pytest.mark.parametrize("path", ["binlog", "sweep"])
def test_reader_gone_ends_watch_quietly(db: MariaDB, tmp_path: Path, path: str) -> None:
    """`reactor watch | head -1`: once the reader has closed the pipe, the next alarm ends
    the watcher with status 0 and no traceback, whether that alarm comes from the stream
    (a transaction of several alarms) or from a sweep."""
    err = tmp_path / "stderr"
    with open(err, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "watch", "--config",
             str(write_config(tmp_path / "c.ini", db))],
            stdout=subprocess.PIPE, stderr=err_file, cwd=REPO)
    try:
        assert proc.stdout is not None
        wait_for(lambda: "watching for alarms" in err.read_text(), 20, what="watch ready")
        db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 1", database=DB)
        assert select.select([proc.stdout], [], [], 10)[0], err.read_text()
        assert json.loads(proc.stdout.readline())["process_id"] == 1
        proc.stdout.close()  # what `head -1` does after its line
        if path == "binlog":
            db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id IN (2, 3, 4)",
                       database=DB)
        else:  # rows logged as SQL text: only a sweep sees them
            with db.connect(DB) as conn, conn.cursor() as cur:
                cur.execute("SET SESSION binlog_format = 'STATEMENT'")
                cur.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2")
        assert proc.wait(10) == 0, err.read_text()
        stderr = err.read_text()
        assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
