"""Noise control, pure and clock-injected: the cooldown and the grouping window.

- `Cooldown`: an alert whose key (event and process) was sent less than `[alerts] cooldown`
  seconds ago is not sent again (the seed's "1 hour: the same alert once"). The marks live
  in the state file (`save` is called for every change), so a restart of reactor does not
  repeat what was just sent. A resolve is never held back: it goes to whoever got the alert.
- `Grouper`: per sink, alerts collected from the first one for `[alerts] group_wait`
  seconds, then handed out together: one message instead of one per alert, so that a storm
  of 1,000 failed restarts is one mail, not 1,000.

Both take `now` from the caller: tests advance a number instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Callable

from reactor.alerts.model import Alert


class Cooldown:
    def __init__(self, period: float, marks: dict[str, float] | None = None,
                 save: Callable[[str, float | None], None] | None = None) -> None:
        self.period = period
        self.marks: dict[str, float] = dict(marks or {})
        self._save = save or (lambda key, at: None)

    def allow(self, key: str, now: float) -> bool:
        """True (and the mark set) when `key` may be sent now; False within its cooldown."""
        if self.period <= 0:
            return True
        last = self.marks.get(key)
        if last is not None and 0 <= now - last < self.period:
            return False
        self.marks[key] = now
        self._save(key, now)
        return True

    def prune(self, now: float) -> int:
        """Forget the marks whose cooldown is over (or that lie in the future: a clock
        that jumped back must not silence a key for longer than the period)."""
        stale = [k for k, at in self.marks.items()
                 if now - at >= self.period or at - now > self.period]
        for key in stale:
            del self.marks[key]
            self._save(key, None)
        return len(stale)


class Grouper:
    """Per sink, a buffer of alerts due `wait` seconds after its first alert."""

    def __init__(self, wait: float) -> None:
        self.wait = wait
        self._buffers: dict[str, list[Alert]] = {}
        self._due: dict[str, float] = {}

    def add(self, sink: str, alert: Alert, now: float) -> float:
        """Put `alert` in `sink`'s buffer; returns when that buffer is due."""
        buffer = self._buffers.get(sink)
        if buffer is None:
            self._buffers[sink] = buffer = []
            self._due[sink] = now + self.wait
        buffer.append(alert)
        return self._due[sink]

    def due(self, now: float) -> list[tuple[str, list[Alert]]]:
        """The buffers whose time has come, emptied."""
        ready = [sink for sink, at in self._due.items() if at <= now]
        return [(sink, self._take(sink)) for sink in ready]

    def drain(self) -> list[tuple[str, list[Alert]]]:
        """Every buffer, due or not (stopping)."""
        return [(sink, self._take(sink)) for sink in list(self._buffers)]

    def next_due(self) -> float | None:
        return min(self._due.values(), default=None)

    def pending(self, sink: str) -> int:
        return len(self._buffers.get(sink, ()))

    def _take(self, sink: str) -> list[Alert]:
        del self._due[sink]
        return self._buffers.pop(sink)
