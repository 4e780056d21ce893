"""The connection pool against a real MariaDB that the test restarts."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from lab.mariadb import MariaDB
from reactor.config import load_config
from reactor.errors import DatabaseUnavailable
from reactor.events import Notice, Observers
from reactor.storage.database import Database
from tests.conftest import write_config

pytestmark = pytest.mark.mariadb

WORKERS = 4


def select_sleep(cur: object) -> int:
    cur.execute("SELECT SLEEP(0.2)")  # type: ignore[attr-defined]
    return 1


def select_one(cur: object) -> int:
    cur.execute("SELECT 1")  # type: ignore[attr-defined]
    return int(cur.fetchone()[0])  # type: ignore[attr-defined]


def test_one_lost_connection_renews_the_whole_pool(own_mariadb: MariaDB,
                                                   tmp_path: Path) -> None:
    """After a server restart every pooled connection is dead. The first call finds out
    (DatabaseUnavailable, for the caller to retry); the calls after it all succeed, on
    whichever worker they land, instead of each worker failing once in turn."""
    config = load_config(write_config(tmp_path / "c.ini", own_mariadb)).database
    database = Database(config, workers=WORKERS)

    async def scenario() -> list[int | str]:
        # one call per worker at the same time: every worker opens its connection
        assert await asyncio.gather(*(database.call(select_sleep)
                                      for _ in range(WORKERS))) == [1] * WORKERS
        own_mariadb.restart()
        with pytest.raises(DatabaseUnavailable):
            await database.call(select_one)
        results: list[int | str] = []
        for _ in range(3):  # concurrent rounds, so that every worker is used
            for r in await asyncio.gather(*(database.call(select_sleep)
                                            for _ in range(WORKERS)), return_exceptions=True):
                results.append(r if isinstance(r, int) else type(r).__name__)
        return results

    try:
        assert asyncio.run(scenario()) == [1] * (3 * WORKERS)
    finally:
        database.close()


def test_an_unreachable_database_is_a_condition_that_begins_and_ends(own_mariadb: MariaDB,
                                                                      tmp_path: Path) -> None:
    """The pool tells the observers when the database becomes unreachable (once, however
    many calls fail) and when a call succeeds again: what metrics and alerts build on."""
    config = load_config(write_config(tmp_path / "c.ini", own_mariadb)).database
    heard: list[tuple[str, bool]] = []

    class Listener:
        def on_step(self, step: object) -> None:
            pass

        def on_notice(self, notice: Notice) -> None:
            heard.append((notice.kind.value, notice.active))

    database = Database(config, workers=2, observers=Observers([Listener()]))

    async def scenario() -> None:
        assert await database.call(select_one) == 1
        own_mariadb.stop()
        for _ in range(3):
            with pytest.raises(DatabaseUnavailable):
                await database.call(select_one)
        own_mariadb.start()
        assert await database.call(select_one) == 1

    try:
        asyncio.run(scenario())
    finally:
        database.close()
    assert heard == [("database_down", True), ("database_down", False)]
