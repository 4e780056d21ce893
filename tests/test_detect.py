"""Detection and deduplication (pure; the clock is a counter, nothing sleeps)."""

from __future__ import annotations

from reactor.retry import Backoff
from reactor.sources.detect import AlarmTracker, alarma_of, is_alarm, is_clear


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        self.t += 1.0
        return self.t


def row(alarma: int) -> int:
    """alarma in a row image, as the binlog reader reduces it (alarma_of)."""
    image: dict[str, object] = {"process_id": 1, "alarma": alarma, "notes": "x"}
    value = alarma_of(image)
    assert value is not None
    return value


def test_what_is_an_alarm() -> None:
    assert is_alarm(row(0), row(1))
    assert is_alarm(None, row(1))  # INSERT in alarm
    assert not is_alarm(row(1), row(1))  # notes only
    assert not is_alarm(row(1), row(0))
    assert not is_alarm(None, row(0))
    assert not is_alarm(row(0), None)  # DELETE
    assert is_alarm(2, row(1))  # any non-1 -> 1
    assert is_clear(row(1), row(0)) and is_clear(row(1), None)
    assert not is_clear(row(0), row(0))
    assert alarma_of(None) is None and alarma_of({"alarma": None}) is None


def tracker() -> AlarmTracker:
    return AlarmTracker(Clock())


def test_stream_then_sweep_delivers_once() -> None:
    t = tracker()
    assert t.stream_change(1, row(0), row(1))
    started = t.now()
    assert t.sweep([1], started) == []


def test_sweep_then_late_stream_event_delivers_once() -> None:
    """The sweep read the row before the stream delivered its change: no second alarm."""
    t = tracker()
    assert t.sweep([1], t.now()) == [1]
    assert not t.stream_change(1, row(0), row(1))


def test_a_change_during_the_sweep_query_is_left_to_the_stream() -> None:
    """Sweep query starts, the alarm is cleared by the consumer (stream shows 1->0) before
    the sweep's rows are processed: the stale row must not become a new alarm."""
    t = tracker()
    assert t.stream_change(1, row(0), row(1))
    t.settle(1)
    started = t.now()
    t.stream_change(1, row(1), row(0))
    assert t.sweep([1], started) == []


def test_settled_alarm_still_set_is_retried_by_the_next_sweep() -> None:
    """A cycle that failed leaves alarma=1: the next sweep delivers it again (as the bash
    tool did on every poll), but not while the consumer still holds it."""
    t = tracker()
    assert t.stream_change(1, row(0), row(1))
    assert t.sweep([1], t.now()) == []  # in hand
    t.settle(1)
    assert t.sweep([1], t.now()) == [1]
    assert t.again == {1}  # a retry, not an alarm the stream missed (no sweep catch)
    assert t.sweep([1], t.now()) == []
    assert t.again == set()
    assert t.sweep([1, 2], t.now()) == [2]  # 2: never delivered, the sweep caught it
    assert t.again == set()


def test_cleared_then_raised_again_is_a_new_alarm() -> None:
    t = tracker()
    assert t.stream_change(1, row(0), row(1))
    assert not t.stream_change(1, row(1), row(0))
    assert t.stream_change(1, row(0), row(1))


def test_sweep_forgets_alarms_cleared_behind_the_streams_back() -> None:
    """A row no longer in alarm (cleared while the stream was down) is forgotten, so its
    next 0->1 is delivered."""
    t = tracker()
    assert t.stream_change(1, row(0), row(1))
    assert t.sweep([], t.now()) == []
    assert not t.is_active(1)
    assert t.stream_change(1, row(0), row(1))


def test_a_stream_behind_a_sweep_does_not_deliver_its_alarms_again() -> None:
    """One UPDATE raised the alarm in the transaction ending at 150, which the stream has
    not decoded yet; a sweep that read the server at 200 delivers it. The row is reset
    (250) and a later sweep forgets it. When the stream reaches 150, that 0->1 is the one
    the sweep delivered: no second alarm. The next one (350) is new."""
    t = tracker()
    assert t.sweep([1], t.now(), seen_at=("binlog.000001", 200)) == [1]
    assert t.sweep([], t.now(), seen_at=("binlog.000001", 260)) == []
    assert not t.is_active(1)
    assert not t.stream_change(1, row(0), row(1), at=("binlog.000001", 150))
    assert not t.stream_change(1, row(1), row(0), at=("binlog.000001", 250))
    assert t.stream_change(1, row(0), row(1), at=("binlog.000001", 350))


def test_a_stale_reset_behind_a_sweep_does_not_free_its_alarm_again() -> None:
    """The stream is behind: it has not read the reset (100) of the last round when a sweep
    that read the server at 200 delivers the new round's alarm (150). That reset and that
    0->1 are older than what the sweep read: neither frees the alarm for the next sweep,
    which still finds the row set (this caught a duplicate delivery). A reset after the
    sweep's position (250) does free it."""
    t = tracker()
    assert t.sweep([1], t.now(), seen_at=("binlog.000001", 200)) == [1]
    assert not t.stream_change(1, row(1), row(0), at=("binlog.000001", 100))
    assert not t.stream_change(1, row(0), row(1), at=("binlog.000001", 150))
    assert t.is_active(1)
    assert t.sweep([1], t.now(), seen_at=("binlog.000001", 220)) == []
    assert not t.stream_change(1, row(1), row(0), at=("binlog.000001", 250))
    assert not t.is_active(1)
    assert t.stream_change(1, row(0), row(1), at=("binlog.000001", 300))


def test_a_stream_behind_a_handled_alarm_does_not_hand_it_over_again() -> None:
    """The daemon: a sweep delivers the alarm before the stream reads it, the cycle
    restarts the unit and is done (settled). The stream's late 0->1 of that same UPDATE
    must not start a second restart; a later 0->1, in the next binlog file, does."""
    t = tracker()
    assert t.sweep([1], t.now(), seen_at=("binlog.000001", 200)) == [1]
    t.settle(1)
    assert not t.stream_change(1, row(0), row(1), at=("binlog.000001", 200))
    assert not t.stream_change(1, row(1), row(0), at=("binlog.000002", 40))
    assert t.stream_change(1, row(0), row(1), at=("binlog.000002", 90))


def test_positions_of_a_lost_stream_do_not_hold_back_the_new_one() -> None:
    """After the stream starts over (position lost, another binlog history), its positions
    may sort before those the sweeps read: a 0->1 there is a new alarm."""
    t = tracker()
    assert t.sweep([1], t.now(), seen_at=("binlog.000007", 200)) == [1]
    assert t.sweep([], t.now(), seen_at=("binlog.000007", 300)) == []
    t.stream_restarted()
    assert t.stream_change(1, row(0), row(1), at=("binlog.000001", 500))


def test_backoff_grows_and_is_capped() -> None:
    b = Backoff(0.1, 1.0)
    assert [round(b.next(), 3) for _ in range(6)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    b.reset()
    assert b.next() == 0.1


def test_repeated_position_lost_is_paced_by_the_backoff() -> None:
    """Error 1236 that comes back at the position the source resynced to (a stand-in
    session raises it) is retried after growing delays, not in a tight loop."""
    import asyncio

    from reactor.config import DatabaseConfig
    from reactor.errors import BinlogPositionLost
    from reactor.sources.binlog import BinlogSource
    from reactor.storage.statefile import StateFile

    cfg = DatabaseConfig(host="127.0.0.1", port=1, socket="", user="u", password="p",
                         database="d", server_id=7, connect_timeout=1, heartbeat=1)
    delays: list[float] = []

    class Recorded(Backoff):
        def next(self) -> float:
            delays.append(super().next())
            return delays[-1]

    source = BinlogSource(cfg, StateFile(None), on_batch=lambda *a: None,
                          on_connected=lambda cp: None, backoff=Recorded(0.01, 0.04))
    sessions = 0

    def session() -> None:
        nonlocal sessions
        sessions += 1
        if sessions > 5:
            source._stopping.set()
            return
        raise BinlogPositionLost("Client requested master to start replication from "
                                 "impossible position")

    source._session = session  # type: ignore[method-assign]
    asyncio.run(source.run())
    assert [round(d, 3) for d in delays] == [0.01, 0.02, 0.04, 0.04, 0.04]


def _event(kind: type, table: str, rows: list[dict[str, object]]) -> object:
    event = object.__new__(kind)  # a decoded event, without a server to decode it from
    event.table = table  # type: ignore[attr-defined]
    event._RowsEvent__rows = rows  # type: ignore[attr-defined]  # what `rows` decoded
    return event


def test_the_reader_keeps_only_what_detection_reads() -> None:
    """The binlog reader reduces each row in its thread: a STATUS_PROCESS row whose alarma
    did not change (a note) is not kept at all; the others keep the pid and alarma before
    and after; PROCESE rows keep the pid and the name after (None: deleted)."""
    from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

    from reactor.events import AlarmaChange, NameChange, RowChange
    from reactor.sources.binlog_session import reduce

    def image(pid: object, alarma: int) -> dict[str, object]:
        return {"process_id": pid, "alarma": alarma, "sound": 0, "notes": "n"}

    out: list[RowChange] = []
    reduce(_event(UpdateRowsEvent, "STATUS_PROCESS", [  # type: ignore[arg-type]
        {"before_values": image(1, 0), "after_values": image(1, 1)},
        {"before_values": image(2, 1), "after_values": image(2, 1)},  # notes only
        {"before_values": image(3, 1), "after_values": image(3, 0)},
        {"before_values": image(None, 0), "after_values": image(None, 1)}]), False, out)
    reduce(_event(WriteRowsEvent, "status_process", [{"values": image(4, 1)}]),  # type: ignore[arg-type]
           True, out)
    reduce(_event(DeleteRowsEvent, "STATUS_PROCESS", [{"values": image(5, 1)}]),  # type: ignore[arg-type]
           False, out)
    reduce(_event(UpdateRowsEvent, "PROCESE", [  # type: ignore[arg-type]
        {"before_values": {"process_id": 6, "process_name": "a"},
         "after_values": {"process_id": 6, "process_name": "b"}}]), False, out)
    reduce(_event(DeleteRowsEvent, "procese", [  # type: ignore[arg-type]
        {"values": {"process_id": 7, "process_name": "c"}}]), True, out)
    assert out == [AlarmaChange(1, 0, 1), AlarmaChange(3, 1, 0), AlarmaChange(4, None, 1),
                   AlarmaChange(5, 1, None), NameChange(6, "b"), NameChange(7, None)]
