"""A throwaway MariaDB primary and GTID replicas of it, each in its own directory on its own
loopback port (lab/mariadb.py), for the fleet tests and the fleet benchmark.

    topo = Topology(tmpdir, replicas=2).start()   # primary server_id 1, replicas 2, 3
    topo.primary.setup_reactor_schema()           # replicated: schema, rows, the account
    topo.sync()                                   # every replica has applied it all
    ...
    topo.cleanup()

Every server runs with `log_slave_updates` (a replica writes what it applies to its own
binlog, so that a binlog reader can stream from it) and `gtid_strict_mode`. Each server's
own start-up writes (the lab's user cleanup, FLUSH PRIVILEGES) take GTIDs of its own; a
replica therefore forgets its own binlog (RESET MASTER) and starts replicating from the
primary's GTID position before any shared write (gtid_slave_pos), else strict mode stops
its SQL thread (an out-of-order GTID, or a replicated DELETE of a row it lacks).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from lab.mariadb import BINLOG_ARGS, MariaDB

REPLICA_ARGS = ("--log-slave-updates=ON", "--gtid-strict-mode=ON")
REPL_USER, REPL_PASSWORD = "repl", "repl-pw"


class Topology:
    """A primary (server_id 1) and `replicas` GTID replicas (server_id 2, 3 ...)."""

    def __init__(self, base: str | os.PathLike[str], *, replicas: int = 2,
                 replica_args: tuple[str, ...] = REPLICA_ARGS) -> None:
        """`replica_args`: the replicas' settings (a test may turn log_slave_updates off)."""
        self.dir = Path(base)
        self.primary = MariaDB(self.dir / "primary", server_id=1, extra_args=REPLICA_ARGS)
        self.replicas = [MariaDB(self.dir / f"replica{i + 1}", server_id=i + 2,
                                 binlog_args=BINLOG_ARGS, extra_args=replica_args)
                         for i in range(replicas)]

    @property
    def servers(self) -> list[MariaDB]:
        return [self.primary, *self.replicas]

    def start(self) -> Topology:
        try:
            self.primary.start()
            start = self.gtid(self.primary)  # before any write the replicas must apply
            self.primary.execute(f"CREATE USER '{REPL_USER}'@'%' IDENTIFIED BY "
                                 f"'{REPL_PASSWORD}'")
            self.primary.execute(f"GRANT REPLICATION SLAVE ON *.* TO '{REPL_USER}'@'%'")
            for replica in self.replicas:
                replica.start()
                self.attach(replica, self.primary, start)
            self.sync()
        except BaseException:
            self.cleanup()
            raise
        return self

    @staticmethod
    def gtid(server: MariaDB) -> str:
        return str(server.execute("SELECT @@GLOBAL.gtid_binlog_pos")[0][0])

    def attach(self, replica: MariaDB, source: MariaDB, gtid: str | None = None) -> None:
        """Make `replica` a GTID replica of `source` (from `gtid`; None: where it stands)."""
        replica.execute("STOP SLAVE")
        if gtid is not None:
            replica.execute("RESET MASTER")
            replica.execute("SET GLOBAL gtid_slave_pos = %s", (gtid,))
        replica.execute(
            "CHANGE MASTER TO MASTER_HOST = '127.0.0.1', MASTER_PORT = %s, MASTER_USER = %s, "
            "MASTER_PASSWORD = %s, MASTER_USE_GTID = slave_pos, MASTER_CONNECT_RETRY = 1",
            (source.port, REPL_USER, REPL_PASSWORD))
        replica.execute("START SLAVE")

    def sync(self, timeout: float = 30.0, replicas: list[MariaDB] | None = None) -> None:
        """Wait until every (running) replica has applied everything the primary has."""
        target = self.gtid(self.primary)
        for replica in replicas if replicas is not None else self.replicas:
            if replica.proc is None:
                continue
            done = replica.execute("SELECT MASTER_GTID_WAIT(%s, %s)", (target, timeout))
            if done[0][0] != 0:
                status = replica.execute("SHOW SLAVE STATUS")
                raise RuntimeError(f"replica {replica.server_id} did not reach {target} in "
                                   f"{timeout} s: {status}")

    def wait_applied(self, replica: MariaDB, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while self.gtid(replica) != self.gtid(self.primary):
            if time.monotonic() > deadline:
                raise RuntimeError(f"replica {replica.server_id} behind the primary")
            time.sleep(0.05)

    def cleanup(self) -> None:
        for server in reversed(self.servers):
            server.cleanup()
        shutil.rmtree(self.dir, ignore_errors=True)
