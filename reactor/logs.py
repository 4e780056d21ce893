"""Logging through loguru: one stable line format, rotation, journald priorities, redaction.

    2026-11-25 08:53:23.123 host01 INFO     restarted nginx.service in 16.2 ms [process=nginx]

- stderr: under journald (JOURNAL_STREAM names our stderr) each line is `<priority>message`,
  with no timestamp or host (the journal has both); otherwise the line above.
- `[logging] log_file`: the line above, rotated at `max_log_size` KB, `log_files_to_keep` kept.
- Records from the standard `logging` module (PyMySQL, mysql-replication, dbus-fast) are
  routed through loguru, so they share format, level and sinks.
- Every secret given to `setup` (the database password) is replaced by *** in every line.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from reactor.config import LoggingConfig

if TYPE_CHECKING:
    from loguru import Record

LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} {extra[host]} {level: <8} {message}{extra[ctx]}"
JOURNAL_LINE = "<{extra[priority]}>{message}{extra[ctx]}"
PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3,
            "CRITICAL": 2}
HOST = socket.gethostname()


class _Intercept(logging.Handler):
    """Standard logging -> loguru, keeping level and the caller's module."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level: str | int = logger.level(record.levelname).name
        except ValueError:
            level = record.levelno
        logger.opt(depth=6, exception=record.exc_info).bind(lib=record.name).log(
            level, "{}", record.getMessage()
        )


def under_journald(stream: TextIO) -> bool:
    """True when JOURNAL_STREAM names this stream's device:inode (systemd.exec(5))."""
    value = os.environ.get("JOURNAL_STREAM", "")
    dev, _, ino = value.partition(":")
    if not (dev.isdigit() and ino.isdigit()):
        return False
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return False
    return st.st_dev == int(dev) and st.st_ino == int(ino)


def _patcher(secrets: tuple[str, ...]) -> Any:
    def patch(record: Record) -> None:
        extra = record["extra"]
        extra.setdefault("host", HOST)
        extra["priority"] = PRIORITY.get(record["level"].name, 6)
        ctx = " ".join(f"{k}={v}" for k, v in extra.items()
                       if k not in ("host", "priority", "ctx"))
        extra["ctx"] = f" [{ctx}]" if ctx else ""
        message = record["message"]
        for secret in secrets:
            if secret in message:
                message = message.replace(secret, "***")
            if secret in extra["ctx"]:
                extra["ctx"] = extra["ctx"].replace(secret, "***")
        record["message"] = message

    return patch


def setup(cfg: LoggingConfig | None, *, secrets: Iterable[str] = (), level: str | None = None,
          to_file: bool = True, stderr: TextIO | None = None) -> None:
    """(Re)configure every sink. Safe to call more than once (tests, reloads)."""
    stream = stderr if stderr is not None else sys.stderr
    lvl = level or (cfg.level if cfg else "INFO")
    logger.remove()
    logger.configure(patcher=_patcher(tuple(s for s in secrets if s)))
    journal = under_journald(stream)
    logger.add(stream, level=lvl, format=JOURNAL_LINE if journal else LINE, colorize=False,
               backtrace=False, diagnose=False)
    if to_file and cfg is not None and cfg.log_file:
        os.makedirs(os.path.dirname(os.path.abspath(cfg.log_file)), exist_ok=True)
        logger.add(cfg.log_file, level=lvl, format=LINE, rotation=cfg.max_log_size * 1024,
                   retention=cfg.log_files_to_keep, encoding="utf-8", backtrace=False,
                   diagnose=False, enqueue=False)
    logging.basicConfig(handlers=[_Intercept()], level=logging.getLevelName(
        "DEBUG" if lvl == "TRACE" else ("INFO" if lvl == "SUCCESS" else lvl)), force=True)
    # mysql-replication warns on every lost connection, which binlog.py reports itself
    verbose = lvl in ("DEBUG", "TRACE")
    logging.getLogger("pymysqlreplication").setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("dbus_fast").setLevel(logging.DEBUG if verbose else logging.WARNING)
