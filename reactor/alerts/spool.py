"""One sink's undelivered messages: a bounded queue in memory, and a spool on disk.

    <state dir>/<state file stem>-alerts/<sink name>/<created ns>-<id>.json

Every message is written to the spool before its first delivery attempt and deleted once
delivered (or given up), so a sink that is down, or reactor killed with SIGKILL, loses
nothing: at the next start `load()` queues every file again, oldest first. A file is written
as tmp -> fsync -> rename -> fsync(dir), so it is whole or absent, never torn. Delivery is at
least once: a message delivered just before a crash, whose file was not yet deleted, is
sent again after the restart.

Bounds: at most `max_queued` messages (`put` drops the oldest beyond that) and none older
than `[alerts] max_age` (`expire`); the caller logs both as ERRORs with the count.

Error handling: an unreadable spool file is logged, deleted and counted by `load()`; a
failed write is logged by the caller, which sends the message anyway (it only lacks its
copy on disk).
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path

from loguru import logger

from reactor.alerts.model import Message
from reactor.storage.statefile import give_to_directory_owner


def spool_root(state_file: str) -> Path:
    """The spool directory of every sink: beside the state file, named after it."""
    path = Path(state_file)
    return path.with_name(f"{path.stem}-alerts")


def write_file(path: Path, payload: bytes) -> None:
    """tmp file -> fsync -> rename -> fsync(dir): the file is whole or absent (blocking)."""
    # a name of its own per writer: a delivery task cut short by the stop may still be
    # writing the file that the stop writes again
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        give_to_directory_owner(fd, path.parent)
        os.write(fd, payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class SinkQueue:
    """Messages for one sink, oldest first. `directory` None: memory only."""

    def __init__(self, name: str, directory: Path | None, max_queued: int) -> None:
        self.name = name
        self.directory = directory
        self.max_queued = max_queued
        self.items: deque[Message] = deque()
        self.files: dict[str, Path] = {}  # message id -> its spool file

    def __len__(self) -> int:
        return len(self.items)

    def load(self) -> int:
        """Queue every message of the spool (oldest first); the number of unreadable files
        (deleted). Raises OSError when the directory cannot be created or read."""
        if self.directory is None:
            return 0
        self.directory.mkdir(parents=True, exist_ok=True)
        bad = 0
        for path in sorted(self.directory.glob("*.json")):
            try:
                message = Message.from_json(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                logger.error("alert sink {}: spooled message {} unreadable ({}); deleted",
                             self.name, path.name, exc)
                path.unlink(missing_ok=True)
                bad += 1
                continue
            self.items.append(message)
            self.files[message.id] = path
        for tmp in self.directory.glob(".*.tmp"):  # a write cut short by a crash
            tmp.unlink(missing_ok=True)
        return bad

    def put(self, message: Message) -> list[Message]:
        """Queue a message; returns the oldest ones dropped to stay within max_queued
        (their files deleted)."""
        self.items.append(message)
        dropped = []
        while len(self.items) > self.max_queued:
            dropped.append(self.items.popleft())
        for old in dropped:
            self.forget(old)
        return dropped

    def head(self) -> Message | None:
        return self.items[0] if self.items else None

    def done(self, message: Message) -> None:
        """Delivered or given up: out of the queue and off the disk."""
        try:
            self.items.remove(message)
        except ValueError:
            pass
        self.forget(message)

    def forget(self, message: Message) -> None:
        path = self.files.pop(message.id, None)
        if path is not None:
            try:
                path.unlink(missing_ok=True)
            except OSError as exc:
                logger.error("alert sink {}: cannot delete {}: {}", self.name, path, exc)

    def expire(self, now: float, max_age: float) -> list[Message]:
        """Drop (and return) every message older than max_age."""
        old = [m for m in self.items if now - m.created > max_age]
        for message in old:
            self.done(message)
        return old

    # ------------------------------------------------------------------ the disk

    def needs_file(self, message: Message) -> bool:
        return self.directory is not None and not message.refresh \
            and message.id not in self.files

    def path_for(self, message: Message) -> Path:
        assert self.directory is not None
        return self.directory / f"{int(message.created * 1e9):020d}-{message.id}.json"

    def store(self, message: Message) -> None:
        """Write the message's file (blocking: callers in the event loop use a thread)."""
        path = self.path_for(message)
        write_file(path, json.dumps(message.as_json()).encode())
        self.files[message.id] = path

    def store_all(self) -> int:
        """Write every queued message that has no file yet (blocking, at stop); the number
        that could not be written."""
        failed = 0
        for message in list(self.items):
            if self.needs_file(message):
                try:
                    self.store(message)
                except OSError as exc:
                    logger.error("alert sink {}: cannot spool message {}: {}", self.name,
                                 message.id, exc)
                    failed += 1
        return failed
