"""Outcomes: clears and notes of many cycles in one transaction, against a real MariaDB.

Each alarm keeps its semantics (cleared only if still set, with its own note, the cycle
told whether it was), a batch never waits for a row another session holds locked, and
many writes at once cost few statements."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from reactor.config import load_config
from reactor.errors import DatabaseUnavailable
from reactor.storage.database import Database
from reactor.storage.outcomes import GATHER, Outcomes
from tests.conftest import write_config

pytestmark = pytest.mark.mariadb
DB = "v_process_monitor"
FIRST = 5000


def rows(server: MariaDB, count: int) -> list[int]:
    pids = list(range(FIRST, FIRST + count))
    server.execute(f"DELETE FROM STATUS_PROCESS WHERE process_id >= {FIRST}", database=DB)
    server.execute(f"DELETE FROM PROCESE WHERE process_id >= {FIRST}", database=DB)
    with server.connect(DB) as conn, conn.cursor() as cur:
        cur.executemany("INSERT INTO PROCESE VALUES (%s, %s)", [(p, f"p{p}") for p in pids])
        cur.executemany("INSERT INTO STATUS_PROCESS (process_id, alarma) VALUES (%s, %s)",
                        [(p, p % 2) for p in pids])  # odd ids in alarm
    return pids


def table(server: MariaDB) -> dict[int, tuple[int, str | None]]:
    return {int(p): (int(a), n) for p, a, n in server.execute(
        f"SELECT process_id, alarma, notes FROM STATUS_PROCESS WHERE process_id >= {FIRST}",
        database=DB)}


def database(server: MariaDB, tmp_path: Path) -> Database:
    return Database(load_config(write_config(tmp_path / "c.ini", server)).database)


def test_many_clears_and_notes_go_out_in_few_transactions_each_with_its_own_answer(
        mariadb: MariaDB, tmp_path: Path) -> None:
    pids = rows(mariadb, 300)
    db = database(mariadb, tmp_path)
    outcomes = Outcomes(db)

    async def scenario() -> list[bool]:
        writer = asyncio.create_task(outcomes.run())
        try:
            # a clear for every process (only the odd ones are in alarm), and a note for a
            # process of its own past the end
            return await asyncio.gather(
                *(outcomes.write(p, f"restarted {p}", clear=True) for p in pids),
                outcomes.write(pids[0], "second write, same process", clear=False))
        finally:
            writer.cancel()

    try:
        answers = asyncio.run(scenario())
    finally:
        db.close()
    assert answers[:-1] == [p % 2 == 1 for p in pids]  # cleared only if it was set
    assert answers[-1] is True
    after = table(mariadb)
    for p in pids[1:]:
        assert after[p] == ((0, f"restarted {p}") if p % 2 else (0, None)), p
    # the second write for the same process waited for the next batch: it came last
    assert after[pids[0]] == (0, "second write, same process")
    assert outcomes.batches <= 4, outcomes.batches  # 301 writes, not 301 statements


def test_clears_ending_one_by_one_go_out_at_once_unless_they_are_a_burst(
        mariadb: MariaDB, tmp_path: Path) -> None:
    """Two clears, one after the other, are written at once. A storm's cycles ending one
    every 2 ms (a burst: writes closer than SPACING) wait for each other: a batch every
    SPACING, not a transaction each."""
    pids = [p for p in rows(mariadb, 200) if p % 2]  # the 100 in alarm
    db = database(mariadb, tmp_path)
    outcomes = Outcomes(db)

    async def scenario() -> tuple[int, int, list[bool]]:
        writer = asyncio.create_task(outcomes.run())
        try:
            for p in pids[:2]:
                assert await outcomes.write(p, "alone", clear=True)
            alone = outcomes.spaced

            async def later(p: int, n: int) -> bool:
                await asyncio.sleep(0.002 * n)
                return await outcomes.write(p, "in a storm", clear=True)

            before = outcomes.batches
            answers = await asyncio.gather(*(later(p, n) for n, p in enumerate(pids[2:])))
            return alone, outcomes.batches - before, answers
        finally:
            writer.cancel()

    try:
        alone, batches, answers = asyncio.run(scenario())
    finally:
        db.close()
    assert alone == 0  # neither of the first two waited
    assert answers == [True] * 98 and outcomes.spaced > 0
    # about 0.2 s of clears: a few batches (one per SPACING, and the two that begin a
    # burst), where a transaction each would be 98
    assert batches <= 12, batches
    assert all(table(mariadb)[p] == (0, "in a storm") for p in pids[2:])


def test_a_burst_with_a_batch_already_queued_does_not_wait(mariadb: MariaDB,
                                                           tmp_path: Path) -> None:
    """Refusals are not paced by systemd: when GATHER requests are queued in a burst, they
    go out at once, not SPACING after the last write (the 100,000-alarm storm)."""
    pids = rows(mariadb, 200)
    db = database(mariadb, tmp_path)
    outcomes = Outcomes(db)

    async def scenario() -> None:
        writer = asyncio.create_task(outcomes.run())
        try:
            for p in pids[:2]:  # two writes back to back: a burst
                await outcomes.write(p, "first", clear=False)
            await asyncio.gather(*(outcomes.write(p, "refused", clear=False)
                                   for p in pids[2:2 + GATHER]))
        finally:
            writer.cancel()

    try:
        asyncio.run(scenario())
    finally:
        db.close()
    assert outcomes.spaced == 0 and outcomes.batches == 3, (outcomes.spaced, outcomes.batches)
    assert all(table(mariadb)[p][1] == "refused" for p in pids[2:2 + GATHER])


def test_a_row_locked_by_an_operator_holds_back_no_other_outcome(mariadb: MariaDB,
                                                                 tmp_path: Path) -> None:
    """An open transaction holds one row: the batch skips it and writes the others at once;
    that one is written alone, once the operator commits."""
    pids = rows(mariadb, 20)
    locked = pids[1]  # odd: in alarm
    db = database(mariadb, tmp_path)
    outcomes = Outcomes(db)
    operator = mariadb.connect(DB)
    operator.autocommit(False)
    with operator.cursor() as cur:
        cur.execute("SELECT * FROM STATUS_PROCESS WHERE process_id = %s FOR UPDATE", (locked,))

    async def scenario() -> tuple[float, float]:
        writer = asyncio.create_task(outcomes.run())
        start = time.monotonic()
        try:
            held = asyncio.create_task(outcomes.write(locked, "locked one", clear=True))
            others = await asyncio.gather(*(outcomes.write(p, "free", clear=True)
                                            for p in pids if p != locked))
            others_took = time.monotonic() - start
            assert others == [p % 2 == 1 for p in pids if p != locked]
            assert not held.done()
            operator.commit()  # the operator lets go
            assert await held is True
            return others_took, time.monotonic() - start
        finally:
            writer.cancel()

    try:
        others_took, held_took = asyncio.run(scenario())
    finally:
        operator.close()
        db.close()
    assert others_took < 2.0, others_took  # not the lock wait (5 s)
    assert table(mariadb)[locked] == (0, "locked one")


def test_writes_still_waiting_when_the_writer_stops_fail_instead_of_hanging(
        mariadb: MariaDB, tmp_path: Path) -> None:
    pids = rows(mariadb, 2)
    db = database(mariadb, tmp_path)
    outcomes = Outcomes(db)

    async def scenario() -> None:
        writer = asyncio.create_task(outcomes.run())
        await asyncio.sleep(0)
        writer.cancel()
        with pytest.raises(DatabaseUnavailable):
            await asyncio.wait_for(outcomes.write(pids[1], "late", clear=True), 5)

    try:
        asyncio.run(scenario())
    finally:
        db.close()


def test_the_last_writes_of_a_burst_do_not_wait_for_cycles_that_are_not_coming(
        mariadb: MariaDB, tmp_path: Path) -> None:
    """In a burst, a write waits for the cycles still running to join its batch; when
    every running cycle is already waiting for its write (the end of a storm), it goes out
    at once."""
    pids = rows(mariadb, 20)
    db = database(mariadb, tmp_path)
    outcomes = Outcomes(db)
    running = [0]
    outcomes.writers = lambda: running[0]

    async def burst_then(p: int, cycles: int) -> int:
        """Two writes back to back (a burst), then one more while `cycles` run: how many
        writes waited for their batch to gather."""
        for q in (p, p + 1):
            await outcomes.write(q, "burst", clear=False)
        spaced = outcomes.spaced
        running[0] = cycles
        await outcomes.write(p + 2, "last", clear=False)
        running[0] = 0
        return outcomes.spaced - spaced

    async def scenario() -> tuple[int, int]:
        writer = asyncio.create_task(outcomes.run())
        try:
            alone = await burst_then(pids[0], 1)  # the only cycle running is this one
            others = await burst_then(pids[10], 2)  # another one may still ask
            return alone, others
        finally:
            writer.cancel()

    try:
        alone, others = asyncio.run(scenario())
    finally:
        db.close()
    assert (alone, others) == (0, 1)
