"""A generic JSON webhook: one POST per message, for any receiver.

The body (version 1; fields are only ever added):

    {"version": 1, "source": "reactor",
     "status": "firing" | "resolved",       resolved when every alert in it is over
     "severity": "critical",                the most severe alert that still fires
     "title": "[MAJOR] host01: 212 processes failed to restart",
     "text": "...",                          the same text as the mail (plain)
     "alerts": [{"event": "cycle_failed", "status": "firing", "severity": "major",
                 "host": "host01", "process_id": 17, "process_name": "nginx",
                 "unit": "nginx.service", "summary": "nginx failed to restart",
                 "note": "...", "at": "2026-11-30T03:42:54.576Z", "at_unix": 1764474174.576,
                 "resolved_at": null, "resolution": ""}, ...]}

Any 2xx answer is a delivery.
"""

from __future__ import annotations

from typing import Any

from reactor.alerts import render
from reactor.alerts.model import Alert, Message, iso
from reactor.alerts.sinks.base import HttpSink

VERSION = 1


def alert_json(alert: Alert) -> dict[str, Any]:
    return {
        "event": alert.event,
        "status": "resolved" if alert.resolved else "firing",
        "severity": alert.severity.label,
        "host": alert.host,
        "process_id": alert.process_id,
        "process_name": alert.process_name,
        "unit": alert.unit,
        "summary": alert.summary,
        "note": alert.note,
        "at": iso(alert.at),
        "at_unix": alert.at,
        "resolved_at": None if alert.resolved_at is None else iso(alert.resolved_at),
        "resolution": alert.resolution,
    }


def body(message: Message) -> dict[str, Any]:
    alerts = message.alerts
    firing = [a for a in alerts if not a.resolved]
    return {
        "version": VERSION,
        "source": "reactor",
        "status": "firing" if firing else "resolved",
        "severity": max(a.severity for a in (firing or alerts)).label,
        "title": render.title(alerts),
        "text": render.text(alerts),
        "alerts": [alert_json(a) for a in alerts],
    }


class WebhookSink(HttpSink):
    kind = "webhook"

    async def send(self, message: Message, now: float) -> str:
        response = await self.post(self.cfg.url, body(message))
        return f"HTTP {response.status_code}"
