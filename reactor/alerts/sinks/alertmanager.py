"""Alertmanager: every alert of a message in one `POST /api/v2/alerts`.

    labels:       alertname (ReactorBreakerOpen, ReactorCycleFailed, ...), host, process,
                  process_id, unit, severity: the same for an alert and its resolve, so
                  Alertmanager deduplicates and resolves by them (empty ones left out)
    annotations:  summary, description (the note), resolution (how it ended)
    startsAt:     when it happened; endsAt: when it was resolved, or for an alert that a
                  recovery will resolve, now + 4 x RESEND (the dispatcher re-sends those
                  every RESEND seconds while they fire, as Alertmanager's clients must);
                  a one-off alert has no endsAt (Alertmanager's resolve_timeout ends it)

`url` is the Alertmanager's base URL (http://127.0.0.1:9093); `/api/v2/alerts` is added
unless the URL already ends with it. Alertmanager groups, silences and routes from there.
"""

from __future__ import annotations

from typing import Any

from reactor.alerts.model import Alert, Message, iso
from reactor.alerts.sinks.base import HttpSink

API = "/api/v2/alerts"
RESEND = 60.0  # seconds between re-sends of the alerts still firing


def alertname(event: str) -> str:
    """breaker_open -> ReactorBreakerOpen"""
    return "Reactor" + "".join(part.capitalize() for part in event.split("_"))


def labels(alert: Alert) -> dict[str, str]:
    found = {
        "alertname": alertname(alert.event),
        "host": alert.host,
        "process": alert.process_name or "",
        "process_id": "" if alert.process_id is None else str(alert.process_id),
        "unit": alert.unit or "",
        "severity": alert.severity.label,
    }
    return {k: v for k, v in found.items() if v}


def payload(alert: Alert, now: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "labels": labels(alert),
        "annotations": {k: v for k, v in (("summary", alert.summary),
                                          ("description", alert.note),
                                          ("resolution", alert.resolution)) if v},
        "startsAt": iso(alert.at),
    }
    if alert.resolved:
        out["endsAt"] = iso(alert.resolved_at if alert.resolved_at is not None else now)
    elif alert.stateful:
        out["endsAt"] = iso(now + 4 * RESEND)
    return out


class AlertmanagerSink(HttpSink):
    kind = "alertmanager"

    @property
    def endpoint(self) -> str:
        url = self.cfg.url.rstrip("/")
        return url if url.endswith(API) else url + API

    async def send(self, message: Message, now: float) -> str:
        response = await self.post(self.endpoint, [payload(a, now) for a in message.alerts])
        return f"HTTP {response.status_code}"
