"""Pure: is an alarm a sweep found a gap in the binlog stream, or is the stream only behind?

In binlog mode the stream delivers every alarm; a sweep that finds one the stream had not
delivered means a bug or a server setting the stream cannot read (a WARNING, an alert). But
a sweep can also race a stream that is merely behind: one UPDATE of 10,000 rows takes the
stream about half a second to decode, and a sweep in between reads rows the stream has not
reached yet. So the sweep reads the server's binlog position with its rows, and:

- the stream has read up to that position: what the sweep found was never streamed, a gap;
- it has not: the judgement waits until it has. Alarms whose 0 -> 1 the stream then shows
  (the sweep had handed them over first) were only late; the others are a gap.

Catch-up sweeps (at start, after a reconnect) are not judged: the stream was not reading.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from reactor.storage.statefile import Checkpoint

MAX_WAITING = 64  # sweeps awaiting judgement; older ones are judged as gaps


@dataclass
class _Waiting:
    server_at: Checkpoint
    pids: set[int]
    streamed: set[int] = field(default_factory=set)


class GapJudge:
    def __init__(self) -> None:
        self._waiting: list[_Waiting] = []

    @property
    def waiting(self) -> int:
        return sum(len(w.pids) for w in self._waiting)

    def swept(self, new: Iterable[int], server_at: Checkpoint | None,
              stream_at: Checkpoint | None) -> list[int]:
        """Alarms a (not catching-up) sweep delivered that the stream had not: those that
        are a gap now. `server_at` is the server's position read after the sweep's rows
        (None: unknown, so judged at once), `stream_at` how far the stream has read."""
        pids = set(new)
        if not pids:
            return []
        if server_at is None or (stream_at is not None and stream_at.key() >= server_at.key()):
            return sorted(pids)
        self._waiting.append(_Waiting(server_at, pids))
        if len(self._waiting) > MAX_WAITING:
            return sorted(self._waiting.pop(0).pids)
        return []

    def streamed(self, pid: int) -> None:
        """The stream showed a 0 -> 1 of this process (delivered or not)."""
        for waiting in self._waiting:
            if pid in waiting.pids:
                waiting.streamed.add(pid)

    def progress(self, stream_at: Checkpoint) -> list[int]:
        """The stream has read up to `stream_at`: the gaps now known."""
        gaps: list[int] = []
        while self._waiting and stream_at.key() >= self._waiting[0].server_at.key():
            done = self._waiting.pop(0)
            gaps.extend(sorted(done.pids - done.streamed))
        return gaps

    def forget(self) -> list[int]:
        """The stream starts over elsewhere (position lost): what was waiting cannot be
        judged any more; returned so that the caller can say so."""
        pids = sorted({p for w in self._waiting for p in w.pids})
        self._waiting.clear()
        return pids
