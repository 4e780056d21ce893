"""`[metrics] textfile`: the metrics written to a *.prom file for node_exporter's textfile
collector, every `textfile_interval` seconds (the seed's way of exporting to Prometheus).

Each write renders the registry in the event loop (the collectors read the daemon's live
objects there) and writes the bytes from a worker thread: a temporary file in the same
directory, then rename(2), so node_exporter reads either the old file or the new one,
never a torn one. The last write happens at stop; the file then keeps the final counts
(node_exporter's node_textfile_mtime_seconds tells how old it is).

Error handling: the first write happens at start: a directory that does not exist or is
not writable is a ConfigError naming `[metrics] textfile` (exit 1). A later failed write is
logged as a WARNING (once per distinct error) and retried at the next interval.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from loguru import logger
from prometheus_client import CollectorRegistry, generate_latest

from reactor.errors import ConfigError


def write_atomically(path: Path, data: bytes) -> None:
    """tmp file beside `path` (not *.prom: node_exporter skips it) -> rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)
        raise


class TextfileWriter:
    def __init__(self, path: str, interval: float, registry: CollectorRegistry) -> None:
        self.path = Path(path)
        self.interval = interval
        self.registry = registry
        self.writes = 0
        self._last_error = ""

    def write_now(self) -> None:
        """One write, in the caller's thread: at start (raises ConfigError) and at stop."""
        try:
            write_atomically(self.path, generate_latest(self.registry))
        except OSError as exc:
            raise ConfigError([f"[metrics] textfile: cannot write {self.path}: "
                               f"{exc.strerror or exc}"]) from None
        self.writes += 1

    async def run(self) -> None:
        """Write every interval until cancelled (the caller owns this task); once more at
        the end, so that the file holds the final counts."""
        try:
            while True:
                await asyncio.sleep(self.interval)
                data = generate_latest(self.registry)
                try:
                    await asyncio.to_thread(write_atomically, self.path, data)
                except OSError as exc:
                    if str(exc) != self._last_error:
                        logger.warning("metrics: cannot write {}: {}; retrying every {:g} s",
                                       self.path, exc, self.interval)
                        self._last_error = str(exc)
                    continue
                if self._last_error:
                    logger.info("metrics: {} written again", self.path)
                    self._last_error = ""
                self.writes += 1
        finally:
            try:
                self.write_now()
            except ConfigError as exc:
                logger.warning("metrics: last write failed: {}", exc)
