"""Shared fixtures: a throwaway MariaDB per module (or per test when a test breaks the
server), a sandboxed systemd, config files, and a `reactor` subprocess reader.

A part that cannot be started FAILS the test rather than skipping it: an integration test
that silently skips is a test that does not run (CI must never pass that way). On a machine
that cannot run them (no root, no cgroups), REACTOR_ALLOW_SKIP=1 turns those into skips.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import LabUnavailable, client
from lab.mariadb import MariaDB
from lab.proc import REPO, ReactorProcess
from lab.sandbox import SystemdSandbox

__all__ = ["REPO", "Proc"]

Proc = ReactorProcess

REACTOR = [sys.executable, "-m", "reactor"]
ALLOW_SKIP = os.environ.get("REACTOR_ALLOW_SKIP") == "1"


def unavailable(reason: str) -> None:
    if not ALLOW_SKIP:
        pytest.fail(f"this test must run, but: {reason} (REACTOR_ALLOW_SKIP=1 to skip)")
    pytest.skip(reason)


def start_mariadb(base: Path, **kwargs: Any) -> MariaDB:
    try:
        server = MariaDB(base, **kwargs)
        server.start()
    except LabUnavailable as exc:
        unavailable(str(exc))
    return server


@pytest.fixture(scope="module")
def mariadb() -> Iterator[MariaDB]:
    """A server shared by one test module, with the schema and the reactor account."""
    base = Path(tempfile.mkdtemp(prefix="reactor-db-"))
    server = start_mariadb(base)
    try:  # the server goes whatever fails after it started
        server.setup_reactor_schema()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def own_mariadb(tmp_path: Path) -> Iterator[MariaDB]:
    """A server for one test, which may stop, freeze or reconfigure it."""
    server = start_mariadb(tmp_path / "db")
    try:
        server.setup_reactor_schema()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def db(mariadb: MariaDB) -> Iterator[MariaDB]:
    """The module's server with the sample rows restored and every alarm cleared."""
    reset_rows(mariadb)
    yield mariadb


def reset_rows(server: MariaDB) -> None:
    server.execute("DELETE FROM REACTOR_AUDIT", database="v_process_monitor")
    server.execute("DELETE FROM STATUS_PROCESS WHERE process_id > 4", database="v_process_monitor")
    server.execute("DELETE FROM PROCESE WHERE process_id > 4", database="v_process_monitor")
    server.execute("UPDATE STATUS_PROCESS SET alarma = 0, notes = NULL",
                   database="v_process_monitor")
    server.execute("UPDATE PROCESE SET process_name = ELT(process_id, 'nginx', 'apache2', "
                   "'postfix', 'cron')", database="v_process_monitor")


def write_config(path: Path, server: MariaDB, sections: dict[str, dict[str, Any]] | None = None,
                 processes: dict[str, dict[str, Any]] | None = None) -> Path:
    """A config file for `server`, fast timings for tests; `sections` override keys."""
    base: dict[str, dict[str, Any]] = {
        "database": {"host": "127.0.0.1", "port": server.port, "user": "reactor",
                     "password": "reactor-pw", "database": "v_process_monitor",
                     "server_id": 100, "heartbeat": 0.5, "connect_timeout": 1},
        "monitor": {"mode": "auto", "check_interval": 60,
                    "state_file": path.parent / f"{path.stem}-state.json"},
        "logging": {"level": "DEBUG" if os.environ.get("REACTOR_TEST_DEBUG") else "INFO",
                    "log_file": ""},
        # never the machine's system bus: tests that restart units point this at a sandbox
        "systemd": {"bus": "unix:path=/nonexistent/reactor-test-bus"},
        # no listener on the default port: tests run many reactors at once; the metrics
        # tests give theirs a free port
        "metrics": {"listen": ""},
    }
    for section, values in (sections or {}).items():
        base.setdefault(section, {}).update(values)
    for name, values in (processes or {}).items():
        base[f"process.{name}"] = values
    client.write_config(path, base)
    return path


@pytest.fixture
def procs() -> Iterator[list[Proc]]:
    """Collects reactor subprocesses so that each one is ended after the test."""
    started: list[Proc] = []
    yield started
    for p in started:
        p.kill()


@pytest.fixture
def mariadb_client() -> str:
    path = shutil.which("mariadb")
    if path is None:
        unavailable("the stock mariadb client is not installed")
    return str(path)


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SystemdSandbox]:
    """A real systemd user manager in its own namespaces, shared by one test module; tests
    use unit names of their own."""
    base = Path(tempfile.mkdtemp(prefix="reactor-sbx-"))
    try:
        sbx = SystemdSandbox(base).start()
    except LabUnavailable as exc:
        unavailable(str(exc))
    yield sbx
    sbx.stop()
    shutil.rmtree(base, ignore_errors=True)


def wait_for(predicate: Any, timeout: float = 15.0, interval: float = 0.05,
             what: str = "condition") -> Any:
    """Poll predicate() until it returns something truthy; that value is returned."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
