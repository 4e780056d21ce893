"""A message as people read it: a title and a text, plain or markdown (pure).

    title:  [MAJOR] host01: 212 processes failed to restart
    text:   212 processes failed to restart on host01: app-1, app-2, ... and 202 more

            - MAJOR cycle_failed: app-1 failed to restart: no such unit (2 attempt(s))
              [host01, process 1001 app-1, app-1.service, 2026-11-30 03:42:54 +0000]
            ... and 182 more alerts (REACTOR_AUDIT has every step)

Alerts are shown by group (one event, firing or resolved), most severe first. A storm names
its first NAMES_SHOWN processes in the headline and details its first DETAILS_SHOWN alerts:
a message stays readable (and within DingTalk's size limit) however many alerts it carries.
"""

from __future__ import annotations

from collections.abc import Sequence

from reactor.alerts.model import Alert, Severity, local
from reactor.alerts.policy import EVENTS, Event

NAMES_SHOWN = 10
DETAILS_SHOWN = 30
NOTE_SHOWN = 300  # characters of a note in a detail line


def _event(name: str, severity: Severity) -> Event:
    return EVENTS.get(name) or Event(severity, name, f"{{n}} x {name}")


def label(alerts: Sequence[Alert]) -> str:
    """RESOLVED when every alert is over, else the most severe level: CRITICAL ..."""
    if all(a.resolved for a in alerts):
        return "RESOLVED"
    return max(a.severity for a in alerts if not a.resolved).name


def groups(alerts: Sequence[Alert]) -> list[list[Alert]]:
    """Alerts by (event, resolved), firing before resolved, most severe first, else in
    the order they came."""
    by: dict[tuple[str, bool], list[Alert]] = {}
    for alert in alerts:
        by.setdefault((alert.event, alert.resolved), []).append(alert)
    return sorted(by.values(), key=lambda g: (g[0].resolved, -g[0].severity))


def headline(group: Sequence[Alert], *, names: bool = True) -> str:
    """One line for a group: the alert's summary, or "212 processes failed to restart on
    host01: a, b, ... and 202 more"."""
    first = group[0]
    kind = _event(first.event, first.severity)
    if len(group) == 1:
        if not first.resolved:
            return first.summary
        over = kind.over.format(process=first.process) if kind.over else ""
        return f"resolved: {over or first.summary}"
    template = (kind.over_many or f"resolved: {kind.many}") if first.resolved else kind.many
    text = template.format(n=len(group))
    hosts = sorted({a.host for a in group})
    text += f" on {', '.join(hosts)}"
    shown = [a.process for a in group if a.process]
    if names and shown:
        more = len(shown) - NAMES_SHOWN
        text += ": " + ", ".join(shown[:NAMES_SHOWN]) + (f" and {more} more" if more > 0
                                                          else "")
    return text


def title(alerts: Sequence[Alert]) -> str:
    """[MAJOR] host01: 212 processes failed to restart"""
    hosts = ", ".join(sorted({a.host for a in alerts}))
    parts = groups(alerts)
    if len(parts) == 1:
        what = headline(parts[0], names=False)
        if len(parts[0]) > 1:  # "... on host01" is already in the prefix
            what = what.rsplit(" on ", 1)[0]
    else:
        counts = ", ".join(f"{len(g)} {'resolved ' if g[0].resolved else ''}{g[0].event}"
                           for g in parts)
        what = f"{len(alerts)} alerts ({counts})"
    return f"[{label(alerts)}] {hosts}: {what}"


def detail(alert: Alert) -> str:
    """One alert on one line, with every field a reader may need."""
    level = "RESOLVED" if alert.resolved else alert.severity.name
    note = alert.resolution if alert.resolved else alert.note
    if len(note) > NOTE_SHOWN:
        note = note[:NOTE_SHOWN - 3] + "..."
    where = [alert.host]
    if alert.process_id is not None:
        where.append(f"process {alert.process_id}"
                     + (f" {alert.process_name}" if alert.process_name else ""))
    if alert.unit:
        where.append(alert.unit)
    where.append(local(alert.at))
    if alert.resolved and alert.resolved_at is not None:
        where.append(f"resolved {local(alert.resolved_at)}")
    return (f"{level} {alert.event}: {alert.summary}" + (f": {note}" if note else "")
            + f" [{', '.join(where)}]")


def text(alerts: Sequence[Alert], *, markdown: bool = False) -> str:
    """The body: a headline per group, then one detail line per alert (up to
    DETAILS_SHOWN)."""
    parts = groups(alerts)
    out: list[str] = []
    for group in parts:
        line = headline(group)
        out.append(f"**{line}**" if markdown else line)
    out.append("")
    ordered = [a for g in parts for a in g]
    for alert in ordered[:DETAILS_SHOWN]:
        out.append(f"- {detail(alert)}")
    more = len(ordered) - DETAILS_SHOWN
    if more > 0:
        out.append(f"- ... and {more} more alert(s) (REACTOR_AUDIT has every step)")
    if markdown:  # DingTalk's markdown needs a blank line to break a paragraph
        return "\n\n".join(line for line in out if line)
    return "\n".join(out) + "\n"
