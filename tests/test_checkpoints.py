"""The binlog checkpoint: used only on the server (binlog history) it was read from, and
never ahead of what `reactor watch` has printed."""

from __future__ import annotations

import fcntl
import json
import signal
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from tests.conftest import REPO, Proc, start_mariadb, wait_for, write_config
from tests.test_watch import DB, alarm_of, sentinel, watch

pytestmark = pytest.mark.mariadb


def test_a_checkpoint_from_another_server_is_not_read_from(own_mariadb: MariaDB,
                                                           tmp_path: Path,
                                                           procs: list[Proc]) -> None:
    """A state file written against server A, then the config points at server B (same
    port number elsewhere, a new data directory, a RESET MASTER: the same file names and
    server_id). Both were set up alike, so A's offset falls on a transaction boundary in
    B's binlog: read from there, B's process 3 (set and reset since) would come out as an
    alarm. Instead: an ERROR naming both origins, the stream starts at B's current
    position, and the sweep finds what is set on B."""
    a = own_mariadb
    state = tmp_path / "state.json"
    p = watch(procs, write_config(tmp_path / "a.ini", a), "--state-file", str(state))
    assert p.stop() == 0
    saved = json.loads(state.read_text())["binlog"]
    created = saved.get("origin", {}).get("file_created", int(time.time()))
    # B's binlog must be created in another second than A's (its origin differs only there)
    wait_for(lambda: time.time() >= created + 1.5, what="the next second")
    b = start_mariadb(tmp_path / "b")
    try:
        b.setup_reactor_schema()
        assert b.execute("SHOW MASTER STATUS")[0][:2] == (saved["file"], saved["pos"])
        b.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 3", database=DB)
        b.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id = 3", database=DB)
        b.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 2", database=DB)
        p2 = watch(procs, write_config(tmp_path / "b.ini", b), "--state-file", str(state))
        error = p2.wait_stderr(r"ERROR .*belongs to another binlog history").string
        assert f"{saved['file']}:{saved['pos']}" in error and error.count("server_id 1") == 2
        got = alarm_of(p2.line())
        assert (got["process_id"], got["source"]) == (2, "sweep")
        sentinel(b, p2, 4)  # and never process 3
        assert p2.stop() == 0
        assert saved["origin"]["server_id"] == 1
        again = json.loads(state.read_text())["binlog"]
        assert again["origin"]["file_created"] != created
    finally:
        b.cleanup()


def test_watch_killed_while_printing_resumes_with_the_rows_it_had_not_printed(
        db: MariaDB, tmp_path: Path, procs: list[Proc]) -> None:
    """One transaction raises 1,000 alarms and nobody reads `reactor watch`'s output: its
    pipe fills up after a few hundred lines. Killed then (SIGKILL), and the alarms reset:
    the next run with the same state file replays that transaction, because the
    checkpoint never passed a row that was not printed."""
    with db.connect(DB) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO PROCESE VALUES (%s, %s)",
                        [(i, f"bulk-{i}") for i in range(1000, 2000)])
        cur.executemany("INSERT INTO STATUS_PROCESS (process_id, alarma) VALUES (%s, 0)",
                        [(i,) for i in range(1000, 2000)])
    config = write_config(tmp_path / "c.ini", db)
    state = tmp_path / "state.json"
    err = tmp_path / "stderr"
    with open(err, "w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "watch", "--config", str(config),
             "--state-file", str(state)], stdout=subprocess.PIPE, stderr=err_file, cwd=REPO)
    try:
        assert proc.stdout is not None
        wait_for(lambda: "watching for alarms" in err.read_text(), 20, what="watch ready")
        db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id >= 1000",
                   database=DB)

        def queued() -> int:
            buf = bytearray(4)
            fcntl.ioctl(proc.stdout, termios.FIONREAD, buf)  # type: ignore[arg-type]
            return int.from_bytes(buf, sys.byteorder)

        wait_for(lambda: queued() >= 60000, 20, what="the output pipe full")
        time.sleep(0.5)  # time enough for any checkpoint save to reach the disk
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        # a line is printed once its newline is out: the kill may cut the last one short
        whole = proc.stdout.read().split(b"\n")[:-1]
        printed = {json.loads(line)["process_id"] for line in whole}
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert 100 < len(printed) < 1000, len(printed)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 0 WHERE process_id >= 1000", database=DB)
    p = watch(procs, config, "--state-file", str(state))
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 4", database=DB)
    replayed: set[int] = set()
    while True:
        got = alarm_of(p.line())
        if got["process_id"] == 4:
            break
        assert got["source"] == "binlog"
        replayed.add(int(str(got["process_id"])))
    missing = set(range(1000, 2000)) - printed - replayed
    assert not missing, f"{len(missing)} alarm(s) never printed, e.g. {sorted(missing)[:5]}"
