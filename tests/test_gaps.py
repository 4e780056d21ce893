"""Pure parts of the failure paths: the gap judge, a sweep racing a stream that is behind,
the rules of what the stream cannot read, and what a config reload may change live."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from reactor.config import parse_config
from reactor.events import Alarm, AlarmaChange, RowChange
from reactor.reload import live_config
from reactor.sources.binlog import BinlogSource
from reactor.sources.binlog_rules import statement_kind, unreadable_event
from reactor.sources.gaps import GapJudge
from reactor.sources.intake import Intake
from reactor.sources.monitor import Monitor
from reactor.storage import queries
from reactor.storage.statefile import Checkpoint, Origin, StateFile


def at(pos: int, file: str = "binlog.000002") -> Checkpoint:
    return Checkpoint(file, pos)


def test_a_stream_that_has_read_past_the_sweep_has_a_gap() -> None:
    judge = GapJudge()
    assert judge.swept([7, 3], at(100), at(100)) == [3, 7]
    assert judge.swept([5], at(100), at(20, "binlog.000003")) == [5]  # a later file
    assert judge.swept([], at(100), None) == []


def test_unknown_server_position_is_judged_at_once() -> None:
    assert GapJudge().swept([4], None, at(1)) == [4]


def test_a_stream_that_is_behind_is_judged_when_it_catches_up() -> None:
    """The sweep read rows the stream had not reached: those the stream then shows were
    only late; the others are a gap, known once the stream has read as far as the sweep."""
    judge = GapJudge()
    assert judge.swept([1, 2, 3], at(500), at(100)) == []
    assert judge.waiting == 3
    judge.streamed(1)
    judge.streamed(3)
    assert judge.progress(at(400)) == []
    assert judge.progress(at(500)) == [2]
    assert judge.waiting == 0
    assert judge.progress(at(900)) == []


def test_several_sweeps_wait_in_order() -> None:
    judge = GapJudge()
    assert judge.swept([1], at(200), at(100)) == []
    assert judge.swept([2], at(300), None) == []  # nothing read yet: wait too
    judge.streamed(2)
    assert judge.progress(at(250)) == [1]
    assert judge.progress(at(10, "binlog.000003")) == []
    assert judge.forget() == []


def test_a_lost_position_forgets_what_waits() -> None:
    judge = GapJudge()
    judge.swept([8, 9], at(200), at(100))
    assert judge.forget() == [8, 9]
    assert judge.progress(at(999)) == []


class Server:
    """Answers the sweep's query: the rows in alarm, then the binlog position."""

    def __init__(self) -> None:
        self.rows: list[tuple[int, str | None]] = []
        self.at = ("binlog.000001", 0, "")  # file, offset, GTID position ("": none)

    async def call(self, fn: Any, *args: Any) -> Any:
        assert fn is queries.fetch_alarmed_at
        return list(self.rows), self.at


def test_a_sweep_ahead_of_the_stream_is_not_repeated_by_it() -> None:
    """A sweep reads an alarm the stream has not decoded yet (the UPDATE ends at 200, the
    server is at 250); the row is reset and the next sweep finds nothing. The stream's
    late 0->1 is the alarm already delivered, and not a gap either. Once the stream starts
    over elsewhere (position lost), a 0->1 at a position that sorts lower is new."""
    config = parse_config("[database]\nuser = x\n")
    emitted: list[Alarm] = []
    intake, server = Intake(emitted.append), Server()
    monitor = Monitor(config, server, StateFile(None), intake)  # type: ignore[arg-type]
    monitor.binlog = BinlogSource(config.database, StateFile(None), on_batch=intake.on_batch,
                                  on_connected=lambda cp: None)
    up: list[RowChange] = [AlarmaChange(5, 0, 1)]
    down: list[RowChange] = [AlarmaChange(5, 1, 0)]

    async def scenario() -> None:
        server.rows, server.at = [(5, "web")], ("binlog.000001", 250, "")
        assert await monitor.sweep(catch_up=False) == 1
        server.rows, server.at = [], ("binlog.000001", 300, "")
        assert await monitor.sweep(catch_up=False) == 0
        for changes, pos in ((up, 200), (down, 300)):  # the stream, late
            intake.on_batch(changes, at(pos, "binlog.000001"))
            assert monitor.judge.progress(at(pos, "binlog.000001")) == []
        assert [a.source.value for a in emitted] == ["sweep"]
        monitor._on_position_lost()
        intake.on_batch(up, at(100, "binlog.000001"))
        assert [a.source.value for a in emitted] == ["sweep", "binlog"]

    asyncio.run(scenario())


def test_what_the_stream_cannot_read() -> None:
    rows = unreadable_event(0xA7, ours_mapped=True)  # UPDATE_ROWS_COMPRESSED_EVENT_V1
    assert rows is not None and "log_bin_compress" in rows.detail and not rows.whole
    assert unreadable_event(0xA7, ours_mapped=False) is None  # another table's rows
    payload = unreadable_event(0x28, ours_mapped=False)  # TRANSACTION_PAYLOAD_EVENT
    assert payload is not None and payload.whole
    assert "binlog_transaction_compression" in payload.detail
    query = unreadable_event(0xA5, ours_mapped=False)  # a compressed statement: sweep only
    assert query is not None and query.detail == ""
    assert unreadable_event(0x22, ours_mapped=True) is None  # ANONYMOUS_GTID: no rows


def test_which_statements_logged_as_text_may_hide_an_alarm() -> None:
    assert statement_kind("UPDATE STATUS_PROCESS SET alarma = 1") == "dml"
    assert statement_kind("/* app */ insert into status_process values (9, 1, 0, '')") == "dml"
    assert statement_kind("REPLACE INTO STATUS_PROCESS VALUES (1, 1, 0, NULL)") == "dml"
    assert statement_kind("ALTER TABLE STATUS_PROCESS ADD COLUMN x INT") == "ddl"
    assert statement_kind("CREATE INDEX i ON STATUS_PROCESS (sound)") == "ddl"
    assert statement_kind("GRANT SELECT ON v.STATUS_PROCESS TO r") == "ddl"
    assert statement_kind("UPDATE PROCESE SET process_name = 'x'") is None
    assert statement_kind("BEGIN") is None


def test_origins_compare_the_history_not_the_version() -> None:
    a = Origin(1, 1000, "10.11.19-MariaDB")
    assert a.same_history(Origin(1, 1000, "11.4.2-MariaDB"))  # an upgrade
    assert not a.same_history(Origin(1, 1001))  # another file: RESET MASTER, new datadir
    assert not a.same_history(Origin(2, 1000))
    assert Origin.from_json(a.as_json()) == a
    assert Origin.from_json({"server_id": "1"}) is None


BASE = """
[database]
user = reactor
password = secret-one
server_id = 10
[monitor]
mode = binlog
check_interval = 300
allowed_units = a-*.service
state_file = /var/lib/reactor/state.json
[systemd]
bus = system
call_timeout = 5
[process.web]
max_attempts = 2
"""


def test_a_reload_keeps_what_needs_a_restart_and_takes_the_rest(tmp_path: Path) -> None:
    running = parse_config(BASE, "/etc/reactor/config.ini")
    new = parse_config(BASE.replace("server_id = 10", "server_id = 11")
                       .replace("password = secret-one", "password = secret-two")
                       .replace("mode = binlog", "mode = poll")
                       .replace("bus = system", "bus = user")
                       .replace("call_timeout = 5", "call_timeout = 7")
                       .replace("check_interval = 300", "check_interval = 30")
                       .replace("a-*.service", "*.service")
                       .replace("max_attempts = 2", "max_attempts = 4"), "elsewhere.ini")
    live, held = live_config(running, new)
    assert held == ["[database] password", "[database] server_id", "[monitor] mode",
                    "[systemd] bus"]
    assert live.database == running.database and live.path == running.path
    assert (live.monitor.mode, live.systemd.bus) == ("binlog", "system")
    assert (live.monitor.check_interval, live.monitor.allowed_units) == (30, ("*.service",))
    assert live.systemd.call_timeout == 7 and live.processes["web"].max_attempts == 4
    assert live_config(running, running) == (running, [])
