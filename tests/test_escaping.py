"""A process name cannot forge log lines: text from the database stays on its line in the
log file, on stderr under journald (where a line that begins `<0>` would be an emergency
entry), in STATUS_PROCESS.notes and in REACTOR_AUDIT details (reactor.text.one_line)."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from loguru import logger

from lab.mariadb import MariaDB
from lab.sandbox import SystemdSandbox
from reactor.config import LoggingConfig
from reactor.ops import logs
from reactor.text import one_line
from tests.conftest import REPO, Proc, wait_for
from tests.rig import DB, Rig

FORGED = "x\n2026-01-01 00:00:00.000 host ERROR forged line"
EMERG = "\n<0>emergency\r\x1b[2J"
LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3} ")


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    yield
    logger.remove()
    logging.basicConfig(handlers=[], force=True)


@pytest.mark.parametrize(("raw", "escaped"), [
    ("plain name", "plain name"),
    ("a\nb", "a\\nb"),
    ("a\r\nb\tc", "a\\r\\nb\\tc"),
    ("\x1b[2J\x00\x7f\x85", "\\x1b[2J\\x00\\x7f\\x85"),
    ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
    ("<0>at the start", "<0>at the start"),  # harmless on its own line: nothing precedes it
    ("naïve ünïcode", "naïve ünïcode"),
])
def test_one_line_escapes_every_control_character(raw: str, escaped: str) -> None:
    assert one_line(raw) == escaped
    assert len(one_line(raw).splitlines()) <= 1


def test_one_line_cuts_at_the_limit_without_splitting_an_escape() -> None:
    assert one_line("abc\x1bdef", 5) == "abc"
    assert one_line("abc\x1bdef", 7) == "abc\\x1b"
    assert one_line("abc\x1bdef", 8) == "abc\\x1bd"
    assert one_line("abcdef", 3) == "abc"
    assert one_line(42) == "42"


def cfg(tmp_path: Path, log_file: str = "") -> LoggingConfig:
    return LoggingConfig(level="INFO", log_file=log_file, max_log_size=5120,
                         log_files_to_keep=5)


def test_a_record_is_one_line_whatever_its_context_and_message_hold(tmp_path: Path) -> None:
    out = io.StringIO()
    log_file = tmp_path / "r.log"
    logs.setup(cfg(tmp_path, str(log_file)), stderr=out)
    logger.bind(process=FORGED).warning("alarm refused: {}", EMERG)
    for text in (out.getvalue(), log_file.read_text()):
        lines = text.splitlines()
        assert len(lines) == 1 and LINE.match(lines[0]), lines
        assert lines[0].endswith("alarm refused: \\n<0>emergency\\r\\x1b[2J "
                                 "[process=x\\n2026-01-01 00:00:00.000 host ERROR forged line]")


def test_under_journald_no_line_of_a_record_takes_another_priority(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A message with `\\n<0>` stays one entry at its own priority; every line of a
    traceback carries the record's priority, and the exception's message is escaped."""
    path = tmp_path / "journal-stream"
    with open(path, "w") as stream:
        st = os.fstat(stream.fileno())
        monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        logs.setup(cfg(tmp_path), stderr=stream)
        logger.bind(process=EMERG).warning("refused {}", EMERG)
        try:
            raise ValueError(f"bad name {EMERG}")
        except ValueError:
            logger.exception("cycle failed for {}", "web")
    lines = path.read_text().splitlines()
    assert lines[0] == ("<4>refused \\n<0>emergency\\r\\x1b[2J "
                        "[process=\\n<0>emergency\\r\\x1b[2J]")
    assert lines[1] == "<3>cycle failed for web"
    assert len(lines) > 3 and all(line.startswith("<3>") for line in lines[1:]), lines
    assert lines[-1] == "<3>ValueError: bad name \\n<0>emergency\\r\\x1b[2J"


# ------------------------------------------------------------------ end to end


@pytest.fixture
def rig(db: MariaDB, sandbox: SystemdSandbox, tmp_path: Path,
        procs: list[Proc]) -> Iterator[Rig]:
    yield Rig(db, sandbox, tmp_path, procs)


@pytest.mark.mariadb
@pytest.mark.systemd
def test_a_process_name_cannot_forge_log_lines_or_journal_priorities(rig: Rig,
                                                                    tmp_path: Path) -> None:
    """Two names a database writer chose: one with a newline and a whole forged log line
    after it, one with a newline and `<0>`. Both are refused (not valid names), and logged,
    noted and audited: the log file has one line for each refusal, the journal-format
    stderr keeps every line at the priority reactor gave it, the notes hold no newline."""
    names = {170: FORGED, 171: f"web{EMERG}"}
    for pid, name in names.items():
        rig.db.execute("INSERT INTO PROCESE VALUES (%s, %s)", (pid, name), database=DB)
        rig.db.execute("INSERT INTO STATUS_PROCESS (process_id) VALUES (%s)", (pid,),
                       database=DB)
    good, _ = rig.add("after-forgery")
    log_file = tmp_path / "reactor.log"
    config = rig.config()
    config.write_text(config.read_text().replace("log_file = \n", f"log_file = {log_file}\n"))
    journal = tmp_path / "journal-stream"
    with open(journal, "w") as stream:
        st = os.fstat(stream.fileno())
        proc = subprocess.Popen(
            [sys.executable, "-m", "reactor", "run", "--config", str(config)], cwd=REPO,
            stdout=subprocess.DEVNULL, stderr=stream,
            env={**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    try:
        wait_for(lambda: "ready: mode=" in journal.read_text(), 30, what="ready")
        for pid in names:
            rig.alarm(pid)
            rig.wait_step(pid, "refused")
        rig.alarm(good)
        rig.wait_cleared(good)
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    file_lines = log_file.read_text().splitlines()
    assert all(LINE.match(line) for line in file_lines), [
        line for line in file_lines if not LINE.match(line)]
    for name in names.values():
        refused = [line for line in file_lines if "alarm refused" in line
                   and f"[process={one_line(name)}]" in line]
        assert len(refused) == 1, file_lines
    priorities = [line[:3] for line in journal.read_text().splitlines()]
    assert priorities and set(priorities) <= {"<6>", "<4>", "<3>"}, priorities
    journal_text = journal.read_text()
    assert "<4>alarm refused: invalid process name 'web\\n<0>emergency" in journal_text
    for pid in names:
        alarma, notes = rig.row(pid)
        assert alarma == 1 and notes is not None and notes.startswith("refused ")
        assert one_line(notes) == notes, notes
        details = [str(r["detail"]) for r in rig.audit(pid)]
        assert all(one_line(d) == d for d in details), details
