"""`Alerts`: an Observer that turns steps and notices into messages, and delivers them.

    on_step / on_notice (sync, in the event loop; returns at once)
      -> policy (severity, key, what resolves what)
      -> sinks whose min_severity the alert meets (none: dropped here)
      -> cooldown (per event and process; a resolve always passes)
      -> grouping (group_wait, per sink)  -> SinkQueue (memory + spool on disk)
      -> one delivery task per sink: retries with backoff, max_age, max_queued

`run()` is owned by the daemon's TaskGroup: it runs the timers (group windows, conditions
that must last `unreachable_after`, Alertmanager re-sends) and the delivery tasks; `close()`
ends it: pending groups go out at once, deliveries get DRAIN seconds, and whatever is left
is on disk for the next start. Nothing here ever waits for a sink on the event path.

Counters, per sink (`alerts.stats[name]`, a SinkStats), for metrics and status:
    sent         messages delivered (a message holds every alert of one group window)
    sent_alerts  alerts in those messages
    failed       delivery attempts that failed (each retry counts)
    dropped      messages given up: older than max_age, beyond max_queued, or rejected
    queued       messages waiting (in memory and on disk)
    last_error   the last failure's text ("" after a delivery)
and over all sinks (`alerts.counts`, an AlertCounts): fired (alerts that passed the
cooldown), suppressed (held back by it), resolved (resolves sent).

Error handling: a failed delivery is a WARNING (SinkUnavailable: retried after retry_delay,
doubling up to retry_max_delay) or an ERROR (SinkRefused: the configuration is wrong; the
message is kept and retried every retry_max_delay); a rejected message (AlertRejected) and
every message dropped for age or room is an ERROR that says how many. A bug in a sink is
logged with its traceback and treated as a failed attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from loguru import logger

from reactor.alerts import policy
from reactor.alerts.delivery import Courier, SinkStats
from reactor.alerts.model import Alert, Message
from reactor.alerts.noise import Cooldown, Grouper
from reactor.alerts.sinks import build
from reactor.alerts.sinks.alertmanager import RESEND
from reactor.alerts.sinks.base import Sink
from reactor.alerts.spool import SinkQueue, spool_root
from reactor.config import AlertsConfig, Config
from reactor.errors import ConfigError
from reactor.events import Notice, Observers, Step
from reactor.storage.statefile import StateFile

HOST = socket.gethostname()
DRAIN = 2.0  # seconds a stop gives the deliveries still queued


@dataclass
class AlertCounts:
    fired: int = 0
    suppressed: int = 0
    resolved: int = 0


@dataclass
class Firing:
    """A stateful alert that went out and waits for its recovery."""

    alert: Alert
    sinks: list[str]

    def as_json(self) -> dict[str, Any]:
        return {"alert": self.alert.as_json(), "sinks": self.sinks}


class Alerts:
    def __init__(self, config: AlertsConfig, sinks: list[Sink], state: StateFile, *,
                 spool: Path | None, observers: Observers | None = None, host: str = HOST,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.sinks = {s.name: s for s in sinks}
        self.state = state
        self.observers = observers
        self.host = host
        self.clock = clock
        self.queues = {n: SinkQueue(n, spool / n if spool else None, config.max_queued)
                       for n in self.sinks}
        self._closed = asyncio.Event()
        self.couriers = {n: Courier(s, self.queues[n], config, clock=clock, closed=self._closed)
                         for n, s in self.sinks.items()}
        self.stats: dict[str, SinkStats] = {n: c.stats for n, c in self.couriers.items()}
        self.counts = AlertCounts()
        self.cooldown = Cooldown(config.cooldown, state.alert_cooldowns(),
                                 state.set_alert_cooldown)
        self.grouper = Grouper(config.group_wait)
        self.firing = self._restore(state.firing_alerts())
        self.armed: dict[str, policy.Arm] = {}
        now = clock()
        # condition alerts still firing when reactor last stopped: resolved once a start-up
        # has had the time to see the condition again and did not
        self._restored = {k for k, f in self.firing.items() if f.alert.process_id is None}
        self._check_restored = now + max(config.unreachable_after, 1.0)
        self._next_refresh = now + RESEND
        self._wake = asyncio.Event()
        self._spool = spool

    def load(self) -> None:
        """Queue what the spool kept from before (at the start of run(): the state file's
        lock is held by then, so no other reactor uses the same spool)."""
        for name, queue in self.queues.items():
            try:
                queue.load()
            except OSError as exc:
                raise ConfigError([f"[monitor] state_file: cannot use the alert spool "
                                   f"{queue.directory}: {exc.strerror or exc}"]) from None
            if len(queue):
                logger.info("alert sink {}: {} undelivered message(s) from before the start",
                            self.sinks[name].describe(), len(queue))
                self.couriers[name].ready.set()
        spool = self._spool
        if spool is not None and spool.is_dir():
            for other in sorted(p for p in spool.iterdir() if p.is_dir()):
                if other.name not in self.sinks and any(other.glob("*.json")):
                    logger.warning("alert spool {} holds undelivered messages for a sink the "
                                   "configuration no longer has ([alert.{}]); left there",
                                   other, other.name)

    def sink_counters(self) -> dict[str, dict[str, int]]:
        """Per sink, the counters metrics export (reactor_alerts_*; see metrics.collector
        SinkCounters)."""
        return {name: {"sent": s.sent, "alerts": s.sent_alerts, "failed": s.failed,
                       "dropped": s.dropped, "queued": s.queued}
                for name, s in self.stats.items()}

    def _restore(self, saved: dict[str, dict[str, Any]]) -> dict[str, Firing]:
        firing = {}
        for key, record in saved.items():
            try:
                firing[key] = Firing(Alert.from_json(record["alert"]),
                                     [str(s) for s in record["sinks"]])
            except (KeyError, TypeError, ValueError):
                logger.error("state file: firing alert {} unreadable; forgotten", key)
                self.state.set_firing_alert(key, None)
        return firing

    # ------------------------------------------------------------------ observer side

    def on_step(self, step: Step) -> None:
        for action in policy.from_step(step, self.host):
            self._apply(action)

    def on_notice(self, notice: Notice) -> None:
        for action in policy.from_notice(notice, self.host, self.config.unreachable_after):
            self._apply(action)

    def _apply(self, action: policy.Action) -> None:
        now = self.clock()
        if isinstance(action, policy.Fire):
            self.fire(action.alert, now)
        elif isinstance(action, policy.Arm):
            key = action.alert.key
            if key not in self.armed:
                self.armed[key] = action
                self._wake.set()
        else:
            self.resolve(action, now)

    def fire(self, alert: Alert, now: float) -> bool:
        """Group the alert for every sink that wants it, unless cooling down. True if sent."""
        targets = [name for name, sink in self.sinks.items() if sink.wants(alert)]
        if not targets:
            return False
        if not self.cooldown.allow(alert.key, now):
            self.counts.suppressed += 1
            logger.debug("alert {} held back: sent less than {:g} s ago", alert.key,
                         self.config.cooldown)
            return False
        self.counts.fired += 1
        for name in targets:
            self.grouper.add(name, alert, now)
        if alert.stateful:
            known = self.firing.get(alert.key)
            sinks = sorted(set(targets) | set(known.sinks if known else ()))
            self.firing[alert.key] = record = Firing(alert, sinks)
            self.state.set_firing_alert(alert.key, record.as_json())
        self._wake.set()
        return True

    def resolve(self, action: policy.Resolve, now: float) -> None:
        if self.armed.pop(action.key, None) is not None:
            return  # ended before it lasted long enough to be an alert
        record = self.firing.pop(action.key, None)
        if record is None:
            return
        self._restored.discard(action.key)
        self.state.set_firing_alert(action.key, None)
        over = record.alert.resolve(action.at, action.resolution)
        self.counts.resolved += 1
        for name in record.sinks:
            if name in self.sinks:
                self.grouper.add(name, over, now)
        self._wake.set()

    # ------------------------------------------------------------------ timers

    def tick(self, now: float) -> None:
        """Whatever is due at `now`: conditions that lasted, group windows that closed,
        the Alertmanager re-send, the check of conditions restored from the state file."""
        for key, arm in list(self.armed.items()):
            if arm.due <= now:
                del self.armed[key]
                self.fire(arm.alert, now)
        if self._restored and now >= self._check_restored:
            active = {c.value for c in self.observers.active} if self.observers else set()
            for key in sorted(self._restored):
                event = self.firing[key].alert.event if key in self.firing else ""
                if event not in active:
                    self.resolve(policy.Resolve(key, now, "not seen since reactor restarted"),
                                 now)
            self._restored.clear()
        for name, alerts in self.grouper.due(now):
            self._enqueue(name, Message(tuple(alerts), created=now))
        if now >= self._next_refresh:
            self._next_refresh = now + RESEND
            self._refresh(now)

    def _refresh(self, now: float) -> None:
        """Re-send the alerts still firing to Alertmanager sinks with nothing queued; forget
        those older than max_age (a process whose alarm was reset by hand, or deleted, never
        sends its recovery: Alertmanager ends them 4 x RESEND after the last re-send)."""
        self.cooldown.prune(now)
        stale = [k for k, f in self.firing.items() if now - f.alert.at > self.config.max_age]
        for key in stale:
            del self.firing[key]
            self.state.set_firing_alert(key, None)
        if stale:
            logger.info("alerts: {} alert(s) firing for longer than max_age ({:g} s) "
                        "forgotten: no recovery will be sent for them", len(stale),
                        self.config.max_age)
        for name, sink in self.sinks.items():
            if sink.kind != "alertmanager" or len(self.queues[name]):
                continue
            alerts = tuple(f.alert for f in self.firing.values() if name in f.sinks)
            if alerts:
                self._enqueue(name, Message(alerts, created=now, refresh=True))

    def next_due(self) -> float | None:
        times = [t for t in (self.grouper.next_due(),
                             min((a.due for a in self.armed.values()), default=None))
                 if t is not None]
        if self._restored:
            times.append(self._check_restored)
        if self.firing and any(s.kind == "alertmanager" for s in self.sinks.values()):
            times.append(self._next_refresh)
        return min(times, default=None)

    def _enqueue(self, name: str, message: Message) -> None:
        dropped = self.queues[name].put(message)
        if dropped:
            self.stats[name].dropped += len(dropped)
            logger.error("alert sink {}: {} messages queued (max_queued): dropped the {} "
                         "oldest ({} alert(s))", self.sinks[name].describe(),
                         self.config.max_queued, len(dropped),
                         sum(len(m.alerts) for m in dropped))
        self.couriers[name].ready.set()

    # ------------------------------------------------------------------ tasks

    async def run(self) -> None:
        """Timers and one delivery task per sink, until close(); then a short drain, and
        everything undelivered written to the spool."""
        self.load()
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = [tg.create_task(c.run(), name=f"alerts-{n}")
                         for n, c in self.couriers.items()]
                while not self._closed.is_set():
                    self._wake.clear()
                    now = self.clock()
                    self.tick(now)
                    due = self.next_due()
                    timeout = None if due is None else max(0.0, due - self.clock())
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), timeout)
                self._flush_groups()
                _, pending = await asyncio.wait(tasks, timeout=DRAIN)
                for task in pending:
                    task.cancel()
        finally:
            self._flush_groups()
            unsaved = sum(q.store_all() for q in self.queues.values())
            left = sum(len(q) for q in self.queues.values())
            if left:
                logger.info("alerts: {} undelivered message(s) kept in the spool{}", left,
                            f" ({unsaved} could not be written)" if unsaved else "")
            for sink in self.sinks.values():
                with contextlib.suppress(Exception):
                    await sink.close()

    def _flush_groups(self) -> None:
        for name, alerts in self.grouper.drain():
            self._enqueue(name, Message(tuple(alerts), created=self.clock()))

    def close(self) -> None:
        """Stop: send what is grouped now, drain briefly, keep the rest on disk."""
        self._closed.set()
        self._wake.set()
        for courier in self.couriers.values():
            courier.ready.set()

def build_alerts(config: Config, state: StateFile,
                 observers: Observers | None = None) -> Alerts | None:
    """The daemon's Alerts, spooling beside the state file; None without any sink."""
    cfg = config.alerts
    if not cfg.sinks:
        return None
    sinks = [build(s, cfg.timeout) for s in cfg.sinks]
    return Alerts(cfg, sinks, state, spool=spool_root(config.monitor.state_file),
                  observers=observers)
