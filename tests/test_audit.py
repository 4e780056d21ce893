"""The audit trail's writer (storage/records.py), against a real MariaDB: a burst of steps
is written in a few statements, every row of it, each with its own time."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from reactor.config import load_config
from reactor.events import Step
from reactor.storage.database import Database
from reactor.storage.records import AUDIT_BURST_INTERVAL, AUDIT_FLUSH_INTERVAL, Store
from tests.conftest import write_config

pytestmark = pytest.mark.mariadb
DB = "v_process_monitor"
FIRST = 7000


def test_a_burst_of_steps_is_written_in_a_few_statements_every_row_kept(
        mariadb: MariaDB, tmp_path: Path) -> None:
    """Steps arriving every 2 ms for a while (a storm's cycles): a statement every
    AUDIT_BURST_INTERVAL, not every AUDIT_FLUSH_INTERVAL, and no row lost or merged."""
    count = 300
    mariadb.execute(f"DELETE FROM REACTOR_AUDIT WHERE process_id >= {FIRST}", database=DB)
    db = Database(load_config(write_config(tmp_path / "c.ini", mariadb)).database)
    store = Store(db)

    async def scenario() -> tuple[float, int]:
        writer = asyncio.create_task(store.run())
        try:
            began = time.monotonic()
            for n in range(count):
                store.on_step(Step(at=time.time(), cycle=n, process_id=FIRST + n,
                                   process_name=f"p{n}", unit=f"p{n}.service",
                                   step="detected", source="binlog", latency_ms=0.0))
                await asyncio.sleep(0.002)
            elapsed = time.monotonic() - began
            await store.flush()
            return elapsed, store.audit_writes
        finally:
            store.stop()
            writer.cancel()

    try:
        elapsed, writes = asyncio.run(scenario())
    finally:
        db.close()
    rows = mariadb.execute(f"SELECT process_id, cycle FROM REACTOR_AUDIT WHERE process_id >= "
                           f"{FIRST} ORDER BY process_id", database=DB)
    assert [(int(p), int(c)) for p, c in rows] == [(FIRST + n, n) for n in range(count)]
    # a write every AUDIT_FLUSH_INTERVAL would be elapsed / 0.05 of them (about five times
    # as many); the first write of the burst, and the final flush, come on top
    assert writes <= elapsed / AUDIT_BURST_INTERVAL + 3, (writes, elapsed)
    assert elapsed / AUDIT_FLUSH_INTERVAL > 2 * (elapsed / AUDIT_BURST_INTERVAL + 3)
