"""Logging: the stable line, journald priorities, rotation, library records, redaction."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from lab.mariadb import MariaDB
from reactor.config import LoggingConfig
from reactor.errors import ConfigError
from reactor.ops import logs
from tests.conftest import REACTOR, REPO, Proc, write_config

NOBODY = 65534
SECRET = "s3cr\\et'\"pw"  # a backslash and both quotes: repr() and JSON escape it

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


def test_password_in_tracebacks_and_escaped_forms_is_redacted(tmp_path: Path) -> None:
    """The final text of every sink: exception messages in tracebacks (chained ones too),
    repr() and JSON forms, library records with exc_info."""
    out = io.StringIO()
    logs.setup(cfg(tmp_path), secrets=[SECRET], stderr=out)
    try:
        try:
            raise KeyError(SECRET)
        except KeyError as inner:
            raise ValueError(f"login failed: {SECRET!r} / {SECRET}") from inner
    except ValueError as exc:
        logger.exception("connect failed: {!r}", exc)
        logger.opt(exception=exc).error("settings {}", {"password": SECRET})
        logging.getLogger("pymysql").error("json %s", json.dumps({"password": SECRET}),
                                           exc_info=True)
        logger.bind(args=repr(repr(SECRET))).warning("doubly escaped")
    text = out.getvalue() + (tmp_path / "reactor.log").read_text()
    assert text.count("Traceback (most recent call last)") == 12, text  # 3 x 2, 2 sinks
    assert "***" in text
    for form in (SECRET, repr(SECRET)[1:-1], json.dumps(SECRET)[1:-1], "s3cr", "pw"):
        assert form not in text, (form, text)


def test_a_password_too_short_to_redact_is_said_once(tmp_path: Path) -> None:
    """Replacing "pw" in every line would mangle words and still give the password away."""
    out = io.StringIO()
    logs.setup(cfg(tmp_path, log_file=""), secrets=["pw3"], stderr=out)
    logger.info("pw3 in a line")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    assert "WARNING" in lines[0] and "shorter than 4 characters" in lines[0]
    assert lines[1].endswith("pw3 in a line")


def test_a_log_file_that_cannot_be_opened_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        logs.setup(cfg(tmp_path, log_file=str(tmp_path)), stderr=io.StringIO())
    assert info.value.problems == [f"[logging] log_file: cannot open {tmp_path}: Is a directory"]


def test_reactor_run_with_an_unusable_log_file_exits_1(tmp_path: Path) -> None:
    """Before the state file, the database and the bus: exit 1 (no restart loop), one line
    naming the key, no traceback."""
    config = tmp_path / "c.ini"
    config.write_text("[database]\nuser = r\nhost = 127.0.0.1\nport = 1\n"
                      f"[monitor]\nstate_file = {tmp_path}/state.json\n"
                      "[systemd]\nbus = unix:path=/nonexistent/reactor-test-bus\n"
                      "[logging]\nlog_file = /proc/1/nope/r.log\n")
    config.chmod(0o600)
    done = subprocess.run([*REACTOR, "run", "--config", str(config)], capture_output=True,
                          text=True, cwd=REPO, check=False, timeout=60)
    assert done.returncode == 1, done.stderr
    assert done.stderr.splitlines() == [
        f"reactor: {config}: [logging] log_file: cannot open /proc/1/nope/r.log: "
        "No such file or directory"]


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files away needs root")
def test_log_files_root_creates_belong_to_the_owner_of_the_directory(tmp_path: Path) -> None:
    """A root `reactor run` must not leave a log file (or a rotated one) the service cannot
    write."""
    directory = tmp_path / "log"
    directory.mkdir()
    os.chown(directory, NOBODY, NOBODY)
    logs.setup(cfg(directory, max_log_size=1, log_files_to_keep=3), stderr=io.StringIO())
    for i in range(100):
        logger.info("line {} {}", i, "x" * 60)
    logger.remove()
    files = list(directory.iterdir())
    assert len(files) >= 2  # rotated at least once
    for path in files:
        st = path.stat()
        assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY), path


@pytest.mark.mariadb
def test_no_log_line_of_a_real_run_holds_the_password(own_mariadb: MariaDB, tmp_path: Path,
                                                      procs: list[Proc]) -> None:
    """`reactor run` and `reactor watch` at DEBUG, the watch through a server restart (the
    stream lost, reconnects refused while the server is down, then back): stderr and the log
    file never show the database password, a backslash and quotes in it, in any form
    (libraries log their connection settings at DEBUG; errors are logged with repr())."""
    db = own_mariadb
    password = "zQx\\5'w\"Vk"
    for user, host in db.execute("SELECT User, Host FROM mysql.user WHERE User = 'reactor'"):
        db.execute("ALTER USER %s@%s IDENTIFIED BY %s", (user, host, password))
    log_file = tmp_path / "r.log"
    config = write_config(tmp_path / "c.ini", db, {
        "database": {"password": password}, "logging": {"level": "DEBUG", "log_file": log_file},
        "monitor": {"check_interval": 0.5}})
    p = Proc(["run", "--config", str(config)])  # no bus here: it stops at the D-Bus step
    procs.append(p)
    assert p.proc.wait(30) == 5
    watch = Proc(["watch", "--config", str(config)])
    procs.append(watch)
    watch.wait_stderr("watching for alarms")
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 4",
               database="v_process_monitor")
    assert json.loads(watch.line())["process_id"] == 4
    db.stop()
    watch.wait_stderr("binlog stream lost")
    time.sleep(2)  # reconnects and sweeps fail while the server is down
    db.start()
    watch.wait_stderr("binlog stream reconnected", timeout=30)
    db.execute("UPDATE STATUS_PROCESS SET alarma = 1 WHERE process_id = 3",
               database="v_process_monitor")
    assert json.loads(watch.line(timeout=20))["process_id"] == 3
    assert watch.stop() == 0
    text = p.stderr + watch.stderr + log_file.read_text()
    assert "DEBUG" in text and "Can't connect" in text, text[-3000:]
    for form in (password, repr(password)[1:-1], json.dumps(password)[1:-1], "zQx"):
        assert form not in text, form
