"""Logging: the stable line, journald priorities, rotation, library records, redaction."""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from reactor import logs
from reactor.config import LoggingConfig
from reactor.lab.mariadb import MariaDB
from tests.conftest import Proc, write_config

LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} \S+ (INFO|WARNING|ERROR) +\S")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logging.basicConfig(handlers=[], force=True)


def cfg(tmp_path: Path, **kw: object) -> LoggingConfig:
    values: dict[str, object] = {"level": "INFO", "log_file": str(tmp_path / "reactor.log"),
                                 "max_log_size": 5120, "log_files_to_keep": 5}
    values.update(kw)
    return LoggingConfig(**values)  # type: ignore[arg-type]


def test_stable_line_format_with_context(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.setup(cfg(tmp_path), stderr=out)
    logger.bind(process="nginx", unit="nginx.service").warning("restart of {} failed", "x")
    line = out.getvalue().strip()
    assert LINE.match(line), line
    assert line.endswith("WARNING  restart of x failed [process=nginx unit=nginx.service]")
    assert (tmp_path / "reactor.log").read_text().strip() == line


def test_journald_lines_carry_priorities_and_no_timestamp(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "journal-stream"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.setup(cfg(tmp_path, log_file=""), stderr=stream)
        logger.info("ready")
        logger.warning("careful")
        logger.error("broken")
        logger.critical("gone")
    assert path.read_text().splitlines() == ["<6>ready", "<4>careful", "<3>broken", "<2>gone"]


def test_journal_stream_of_another_file_is_ignored(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOURNAL_STREAM", "1:2")
    out = io.StringIO()
    logs.setup(cfg(tmp_path, log_file=""), stderr=out)
    logger.info("plain")
    assert LINE.match(out.getvalue())


def test_rotation_by_size_keeps_the_configured_number(tmp_path: Path) -> None:
    logs.setup(cfg(tmp_path, max_log_size=1, log_files_to_keep=2), stderr=io.StringIO())
    for i in range(300):
        logger.info("line {} {}", i, "x" * 60)
    files = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("reactor"))
    assert "reactor.log" in files
    assert 2 <= len(files) <= 3, files  # the live file and at most 2 rotated ones
    for name in files:
        assert (tmp_path / name).stat().st_size <= 1024 + 200


def test_library_records_go_through_the_same_sinks(tmp_path: Path) -> None:
    out = io.StringIO()
    logs.setup(cfg(tmp_path), stderr=out)
    logging.getLogger("pymysql").warning("server said %s", "hello")
    logging.getLogger("dbus_fast.message_bus").error("bus trouble")
    text = out.getvalue()
    assert re.search(r"WARNING +server said hello \[lib=pymysql\]", text)
    assert re.search(r"ERROR +bus trouble \[lib=dbus_fast.message_bus\]", text)
    assert all(LINE.match(line) for line in text.splitlines())


def test_password_is_redacted_everywhere(tmp_path: Path) -> None:
    out = io.StringIO()
    secret = "pa$$-W0rd"
    logs.setup(cfg(tmp_path), secrets=[secret], stderr=out)
    logger.error("connect failed with password {}", secret)
    logging.getLogger("pymysqlreplication").error("settings: {'password': '%s'}", secret)
    logger.bind(dsn=f"mysql://u:{secret}@h").warning("context")
    text = out.getvalue() + (tmp_path / "reactor.log").read_text()
    assert secret not in text
    assert text.count("***") == 6  # three lines, in both sinks


@pytest.mark.mariadb
def test_no_log_line_of_a_real_run_holds_the_password(mariadb: MariaDB, tmp_path: Path,
                                                      procs: list[Proc]) -> None:
    """`reactor watch` at DEBUG through a server restart: stderr and the log file never show
    the database password (libraries log their connection settings at DEBUG)."""
    log_file = tmp_path / "r.log"
    config = write_config(tmp_path / "c.ini", mariadb, {
        "logging": {"level": "DEBUG", "log_file": log_file}})
    p = Proc(["run", "--config", str(config)])  # no bus here: it stops at the D-Bus step
    procs.append(p)
    assert p.proc.wait(30) == 5
    watch = Proc(["watch", "--config", str(config)])
    procs.append(watch)
    watch.wait_stderr("watching for alarms")
    mariadb.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 4",
                    database="v_process_monitor")
    watch.line()
    assert watch.stop() == 0
    text = p.stderr + watch.stderr + (log_file.read_text() if log_file.exists() else "")
    assert "DEBUG" in text
    assert "reactor-pw" not in text
