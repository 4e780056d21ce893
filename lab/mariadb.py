"""A throwaway MariaDB server in a temporary directory, on its own loopback port.

Used by the tests, the demo and the benchmarks; never touches a system server. The
server listens on 127.0.0.1 only and on a Unix socket inside its directory.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

import pymysql

from lab import LabUnavailable

REPO = Path(__file__).resolve().parents[1]
SQL_DIR = REPO / "sql"
BINLOG_ARGS = (
    "--log-bin=binlog",
    "--binlog-format=ROW",
    "--binlog-row-image=FULL",
    "--binlog-row-metadata=FULL",
)


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise LabUnavailable(
        f"{name} not found: install MariaDB (apt-get install mariadb-server mariadb-client)"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class MariaDB:
    """One mariadbd process. `binlog_args` defaults to what the reactor's binlog path needs."""

    def __init__(self, base: str | os.PathLike[str], *, port: int | None = None,
                 binlog_args: tuple[str, ...] = BINLOG_ARGS,
                 extra_args: tuple[str, ...] = (), server_id: int = 1) -> None:
        self.dir = Path(base)
        self.server_id = server_id
        self.datadir = self.dir / "data"
        self.socket = str(self.dir / "mysqld.sock")
        self.port = port or free_port()
        self.binlog_args = binlog_args
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "mariadb.log"
        self.tmpdir = self.dir / "tmp"

    # ------------------------------------------------------------------ lifecycle

    def install(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if (self.datadir / "mysql").is_dir():
            return
        # a tmpdir of its own: in the shared /tmp, the temporary tables of two servers
        # bootstrapping at once (named after their PIDs) were seen removed under them
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        cmd = [_binary("mariadb-install-db"), "--no-defaults", f"--datadir={self.datadir}",
               "--auth-root-authentication-method=normal", "--skip-test-db",
               f"--tmpdir={self.tmpdir}"]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"mariadb-install-db failed: {done.stderr[-2000:]}")

    def start(self, timeout: float = 30.0) -> MariaDB:
        self.install()
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        cmd = [
            _binary("mariadbd"), "--no-defaults", f"--datadir={self.datadir}",
            f"--socket={self.socket}", f"--port={self.port}", "--bind-address=127.0.0.1",
            f"--pid-file={self.dir / 'mariadb.pid'}", f"--server-id={self.server_id}",
            f"--tmpdir={self.tmpdir}",
            "--innodb-buffer-pool-size=64M", "--max-connections=500",
            *self.binlog_args, *self.extra_args,
        ]
        if os.geteuid() == 0:
            cmd.append("--user=root")
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         cwd=self.datadir, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited at start:\n{self.log.read_text()[-3000:]}")
            try:
                self.connect().close()
                break
            except pymysql.err.MySQLError:
                if time.monotonic() > deadline:
                    self.kill()  # it is ours: never leave it running behind a failure
                    raise RuntimeError(f"mariadbd not answering after {timeout} s") from None
                time.sleep(0.05)
        if not getattr(self, "_initialised", False):
            self._initialised = True
            with self.connect() as conn, conn.cursor() as cur:
                # mariadb-install-db's anonymous users shadow user@% on localhost (error 1045)
                cur.execute("DELETE FROM mysql.global_priv WHERE User = ''")
                cur.execute("FLUSH PRIVILEGES")
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Clean shutdown (SIGTERM), waiting for the process to exit."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.thaw()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """Crash it (SIGKILL)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def freeze(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.kill()
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------ clients

    def connect(self, database: str | None = None, **extra: Any) -> pymysql.Connection:
        """A root connection over the Unix socket (autocommit)."""
        return pymysql.connect(unix_socket=self.socket, user="root", password="",
                               database=database, autocommit=True, connect_timeout=5, **extra)

    def execute(self, sql: str, args: Any = None, *, database: str | None = None) -> list[Any]:
        with self.connect(database) as conn, conn.cursor() as cur:
            cur.execute(sql, args)
            return list(cur.fetchall())

    def client(self, *args: str, user: str = "root", password: str = "",
               stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run the stock `mariadb` command-line client against this server over TCP."""
        cmd = [_binary("mariadb"), "--no-defaults", "-h127.0.0.1", f"-P{self.port}", f"-u{user}"]
        if password:
            cmd.append(f"-p{password}")
        return subprocess.run([*cmd, *args], input=stdin, capture_output=True, text=True,
                              check=check, timeout=60)

    def load_sql(self, path: str | os.PathLike[str]) -> None:
        self.client(stdin=Path(path).read_text())

    def setup_reactor_schema(self, password: str = "reactor-pw", *,
                             samples: bool = True) -> dict[str, Any]:
        """setup.sql + grants.sql with the given password; returns [database] settings."""
        text = (SQL_DIR / "setup.sql").read_text()
        if not samples:
            text = text.split("-- sample rows", 1)[0]
        self.client(stdin=text)
        grants = (SQL_DIR / "grants.sql").read_text().replace("change-me", password)
        self.client(stdin=grants)
        return {"host": "127.0.0.1", "port": self.port, "user": "reactor",
                "password": password, "database": "v_process_monitor"}
