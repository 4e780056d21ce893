"""Logging through loguru: one stable line format, rotation, journald priorities, redaction.

    2026-11-25 08:53:23.123 host01 INFO     restarted nginx.service in 16.2 ms [process=nginx]

- stderr: under journald (JOURNAL_STREAM names our stderr) each line is `<priority>message`,
  with no timestamp or host (the journal has both); otherwise the line above.
- `[logging] log_file`: the line above, rotated at `max_log_size` KB, `log_files_to_keep` kept.
- Records from the standard `logging` module (PyMySQL, mysql-replication, dbus-fast) are
  routed through loguru, so they share format, level and sinks.
- Every record is one line: control characters in the message, in context values and in
  an exception's message are escaped (reactor.text.one_line): a process name is the
  database's to choose, and a newline in it must not forge a line of its own, nor `<0>`
  after it an emergency entry in the journal. Under journald every line of a traceback
  carries the record's priority too.
- Every secret given to `setup` (the database password, the alert sinks' passwords, secrets
  and URL tokens: `Config.secrets()`) is replaced by *** in the final text
  of every line, tracebacks included, and so are its escaped forms (repr(), JSON: a password
  with a backslash or a quote shows as `s3cr\\\\et` in a repr). A secret shorter than
  MIN_REDACTED characters is not redacted (replacing "pw" everywhere would mangle words and
  still point at the password); setup says so in a WARNING line.
- A log file that cannot be opened is a ConfigError (`[logging] log_file: cannot open ...`).
  Root running the daemon gives the log files it creates to the owner of their directory
  (the service's LogsDirectory=), rotated files included.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import traceback
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

from loguru import logger

from reactor.config import LoggingConfig
from reactor.errors import ConfigError
from reactor.storage.statefile import give_to_directory_owner
from reactor.text import one_line

if TYPE_CHECKING:
    from loguru import Record

LINE = "{time:YYYY-MM-DD HH:mm:ss.SSS} {extra[host]} {level: <8} {message}{extra[ctx]}"
JOURNAL_LINE = "<{extra[priority]}>{message}{extra[ctx]}"
PRIORITY = {"TRACE": 7, "DEBUG": 7, "INFO": 6, "SUCCESS": 5, "WARNING": 4, "ERROR": 3,
            "CRITICAL": 2}
HOST = socket.gethostname()
MIN_REDACTED = 4  # shorter secrets are not redacted (see above)
INTERNAL = ("host", "priority", "ctx", "_line")  # extra keys of our own, not context


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


def _secret_pattern(secret: str) -> str:
    """A regex for the secret as written, and as repr(), ascii() or JSON escape it (once or
    more: a repr of a repr doubles every backslash)."""
    parts = []
    for c in secret:
        if c == "\\":
            parts.append(r"\\+")
            continue
        alternatives = [r"\\*" + re.escape(c)]  # as is, or a quote escaped by backslashes
        for form in sorted({repr(c)[1:-1], ascii(c)[1:-1], json.dumps(c)[1:-1]}):
            if form != c and form.startswith("\\") and form.lstrip("\\") != c:
                alternatives.append(r"\\+" + re.escape(form.lstrip("\\")))  # \n, \xe9
        parts.append(f"(?:{'|'.join(alternatives)})")
    return "".join(parts)


def redactor(secrets: Iterable[str]) -> Callable[[str], str]:
    """text -> text with every secret (MIN_REDACTED characters or more) replaced by ***."""
    usable = sorted({s for s in secrets if len(s) >= MIN_REDACTED}, key=len, reverse=True)
    if not usable:
        return lambda text: text
    pattern = re.compile("|".join(_secret_pattern(s) for s in usable))
    return lambda text: pattern.sub("***", text)


def _patcher(redact: Callable[[str], str]) -> Any:
    def patch(record: Record) -> None:
        extra = record["extra"]
        extra.setdefault("host", HOST)
        extra["priority"] = PRIORITY.get(record["level"].name, 6)
        ctx = " ".join(f"{k}={one_line(v)}" for k, v in extra.items() if k not in INTERNAL)
        # redacted here too: loguru shows the record itself when a sink fails
        extra["ctx"] = redact(f" [{ctx}]") if ctx else ""
        record["message"] = redact(one_line(record["message"]))

    return patch


def _traceback(exc_type: Any, value: Any, tb: Any) -> str:
    """The traceback, each exception's message (chained and grouped ones too) escaped to
    one line: it may quote text from the database."""
    top = traceback.TracebackException(exc_type, value, tb, compact=True)
    pending, seen = [top], set()
    while pending:
        te = pending.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        message = getattr(te, "_str", None)  # what format_exception_only prints
        if isinstance(message, str):
            te._str = one_line(message)  # type: ignore[attr-defined]
        pending.extend(t for t in (te.__cause__, te.__context__) if t is not None)
        pending.extend(getattr(te, "exceptions", None) or ())
    return "".join(top.format()).rstrip("\n")


def _formatter(template: str, redact: Callable[[str], str], *,
               journal: bool = False) -> Callable[[Record], str]:
    """A loguru format function: the whole line, traceback included, is rendered and
    redacted here; loguru only copies it out (a constant template, so nothing in the text is
    taken for a format field or a colour tag). For the journal, each line of a traceback
    starts with the record's priority: journald reads every line as an entry of its own."""

    def render(record: Record) -> str:
        text = template.format_map(record)
        exc = record["exception"]
        if exc is not None:
            trace = _traceback(exc.type, exc.value, exc.traceback)
            if journal:
                prefix = f"<{record['extra']['priority']}>"
                trace = "\n".join(prefix + line for line in trace.split("\n"))
            text += "\n" + trace
        record["extra"]["_line"] = redact(text)
        return "{extra[_line]}\n"

    return render


def _open_log(path: str, flags: int) -> int:
    """open()'s opener for the log file and each rotated one."""
    fd = os.open(path, flags, 0o666)
    try:
        give_to_directory_owner(fd, os.path.dirname(path) or ".")
    except OSError:
        os.close(fd)
        raise
    return fd


def setup(cfg: LoggingConfig | None, *, secrets: Iterable[str] = (), level: str | None = None,
          to_file: bool = True, stderr: TextIO | None = None) -> None:
    """(Re)configure every sink. Safe to call more than once (tests, reloads)."""
    stream = stderr if stderr is not None else sys.stderr
    lvl = level or (cfg.level if cfg else "INFO")
    secrets = [s for s in secrets if s]
    redact = redactor(secrets)
    logger.remove()
    logger.configure(patcher=_patcher(redact))
    journal = under_journald(stream)
    logger.add(stream, level=lvl,
               format=_formatter(JOURNAL_LINE if journal else LINE, redact, journal=journal),
               colorize=False, backtrace=False, diagnose=False)
    if to_file and cfg is not None and cfg.log_file:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(cfg.log_file)), exist_ok=True)
            logger.add(cfg.log_file, level=lvl, format=_formatter(LINE, redact),
                       rotation=cfg.max_log_size * 1024, retention=cfg.log_files_to_keep,
                       encoding="utf-8", backtrace=False, diagnose=False, enqueue=False,
                       opener=_open_log)
        except OSError as exc:
            raise ConfigError([f"[logging] log_file: cannot open {cfg.log_file}: "
                               f"{exc.strerror or exc}"]) from None
    if any(len(s) < MIN_REDACTED for s in secrets):
        logger.warning("the database password (or another secret of the configuration) is "
                       "shorter than {} characters: log lines do not hide it", MIN_REDACTED)
    logging.basicConfig(handlers=[_Intercept()], level=logging.getLevelName(
        "DEBUG" if lvl == "TRACE" else ("INFO" if lvl == "SUCCESS" else lvl)), force=True)
    # mysql-replication warns on every lost connection, which binlog.py reports itself
    verbose = lvl in ("DEBUG", "TRACE")
    logging.getLogger("pymysqlreplication").setLevel(logging.DEBUG if verbose else logging.ERROR)
    logging.getLogger("dbus_fast").setLevel(logging.DEBUG if verbose else logging.WARNING)
    # httpx logs every request with its URL (an alert sink's URL may hold a token) at INFO
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
