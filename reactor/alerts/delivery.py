"""One sink's courier: takes its queue's messages, oldest first, and delivers them.

    head of the queue -> older than max_age? dropped (ERROR, with the count)
                      -> written to the spool (in a thread) if it has no file yet
                      -> the sink's own rate limit (DingTalk: 20 a minute)
                      -> send, under [alerts] timeout
                         ok: done (file deleted); failed: pause, then the same message again

Messages go out in order, one at a time: a sink that is down holds back only its own queue,
never another sink's, and never the event path.

Counters (`SinkStats`, read by metrics and status): sent, sent_alerts, failed, dropped,
queued, last_error; see dispatcher.py.

Error handling: SinkUnavailable (or the timeout) is a WARNING and a retry after
retry_delay, doubled after each failure up to retry_max_delay; SinkRefused is an ERROR and
a retry every retry_max_delay, the message kept; AlertRejected is an ERROR and the message
dropped; any other exception (a bug in a sink) is logged with its traceback and retried
like SinkUnavailable. Once the stop has begun, a failed message stays in the spool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

from loguru import logger

from reactor.alerts.model import Message
from reactor.alerts.sinks.base import Sink
from reactor.alerts.spool import SinkQueue
from reactor.config import AlertsConfig
from reactor.errors import AlertRejected, SinkRefused, SinkUnavailable
from reactor.retry import Backoff


@dataclass
class SinkStats:
    sent: int = 0  # messages delivered
    sent_alerts: int = 0  # alerts in them
    failed: int = 0  # delivery attempts that failed
    dropped: int = 0  # messages given up: too old, no room, rejected
    last_error: str = ""
    queue: SinkQueue | None = field(default=None, repr=False)

    @property
    def queued(self) -> int:
        """Messages waiting, in memory and on disk."""
        return len(self.queue) if self.queue is not None else 0


class Courier:
    def __init__(self, sink: Sink, queue: SinkQueue, config: AlertsConfig, *,
                 clock: Callable[[], float], closed: asyncio.Event) -> None:
        self.sink = sink
        self.queue = queue
        self.config = config
        self.clock = clock
        self.closed = closed
        self.stats = SinkStats(queue=queue)
        self.ready = asyncio.Event()  # set when the queue may have something
        self.backoff = Backoff(config.retry_delay, config.longest_retry_delay)
        self.log = logger.bind(sink=sink.name)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the stop begins."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.closed.wait(), seconds)

    async def run(self) -> None:
        """Deliver until the queue is empty after the stop began (or a failure then)."""
        sink, queue = self.sink, self.queue
        while True:
            message = queue.head()
            if message is None:
                if self.closed.is_set():
                    return
                self.ready.clear()
                await self.ready.wait()
                continue
            old = queue.expire(self.clock(), self.config.max_age)
            if old:
                self.stats.dropped += len(old)
                self.log.error("alert sink {}: dropped {} undelivered message(s) ({} alert(s)) "
                               "older than max_age ({:g} s)", sink.describe(), len(old),
                               sum(len(m.alerts) for m in old), self.config.max_age)
                continue
            if message.refresh and self.closed.is_set():
                queue.done(message)
                continue
            if queue.needs_file(message):
                try:
                    await asyncio.to_thread(queue.store, message)
                except OSError as exc:
                    self.log.error("alert sink {}: cannot spool message {} ({}); sending it "
                                   "anyway", sink.describe(), message.id, exc)
                if not any(m is message for m in queue.items):  # dropped meanwhile
                    queue.forget(message)
                    continue
            wait = sink.delay(self.clock())
            if wait > 0:
                self.log.info("alert sink {}: rate limit, next message in {:.1f} s",
                              sink.describe(), wait)
                await self._pause(wait)
                if self.closed.is_set():
                    return
                continue
            delay = await self.attempt(message)
            if delay is None:
                continue
            if self.closed.is_set():
                return  # the message stays in the spool for the next start
            await self._pause(delay)

    async def attempt(self, message: Message) -> float | None:
        """One delivery attempt; None when the message is done with, else the pause
        before the next attempt."""
        sink, queue, stats, log = self.sink, self.queue, self.stats, self.log
        n = len(message.alerts)
        error: Exception
        try:
            async with asyncio.timeout(self.config.timeout):
                answer = await sink.send(message, self.clock())
        except AlertRejected as exc:
            stats.failed += 1
            stats.dropped += 1
            stats.last_error = str(exc)
            queue.done(message)
            log.error("alert sink {}: message {} ({} alert(s)) rejected, dropped: {}",
                      sink.describe(), message.id, n, exc)
            return None
        except SinkRefused as exc:
            error, delay = exc, self.backoff.cap
            log.error("alert sink {}: refused: {}; {} message(s) kept, retrying in {:g} s",
                      sink.describe(), exc, len(queue), delay)
        except (SinkUnavailable, TimeoutError) as exc:
            error, delay = exc, self.backoff.next()
            if not str(error):  # the timeout above
                error = SinkUnavailable(f"no answer within {self.config.timeout:g} s")
            log.warning("alert sink {}: delivery failed: {}; {} message(s) queued, retrying "
                        "in {:.1f} s", sink.describe(), error, len(queue), delay)
        except Exception as exc:  # noqa: BLE001 - a sink's bug must not end its task
            error, delay = exc, self.backoff.next()
            log.opt(exception=exc).error("alert sink {}: delivery failed unexpectedly; "
                                         "retrying in {:.1f} s", sink.describe(), delay)
        else:
            queue.done(message)
            self.backoff.reset()
            stats.last_error = ""
            if message.refresh:
                log.debug("alert sink {}: {} firing alert(s) re-sent ({})", sink.describe(),
                          n, answer)
                return None
            stats.sent += 1
            stats.sent_alerts += n
            log.info("alert sink {}: delivered {} alert(s) in message {} ({})",
                     sink.describe(), n, message.id, answer)
            return None
        stats.failed += 1
        stats.last_error = str(error)
        return delay
