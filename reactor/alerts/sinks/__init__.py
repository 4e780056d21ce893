"""The alert sinks, one module each, behind `base.Sink`: `build` makes one from its
`[alert.NAME]` section."""

from __future__ import annotations

import asyncio

from reactor.alerts.model import Message
from reactor.alerts.policy import make
from reactor.alerts.sinks.alertmanager import AlertmanagerSink
from reactor.alerts.sinks.base import Sink
from reactor.alerts.sinks.dingtalk import DingTalkSink
from reactor.alerts.sinks.smtp import SmtpSink
from reactor.alerts.sinks.webhook import WebhookSink
from reactor.config import SinkConfig
from reactor.errors import ReactorError

KINDS: dict[str, type[Sink]] = {
    "alertmanager": AlertmanagerSink,
    "webhook": WebhookSink,
    "dingtalk": DingTalkSink,
    "smtp": SmtpSink,
}


def build(cfg: SinkConfig, timeout: float) -> Sink:
    return KINDS[cfg.type](cfg, timeout)


async def send_test(sinks: list[Sink], host: str, now: float) -> list[tuple[str, str, bool]]:
    """A test alert to each sink, directly (no cooldown, queue or spool): (sink, what it
    answered or why it failed, delivered)."""
    message = Message((make("test", host, now, "sent by `reactor alert test`: if you read "
                            "this, the sink works"),), created=now)
    results = []
    for sink in sinks:
        try:
            async with asyncio.timeout(sink.timeout):
                answer = await sink.send(message, now)
            results.append((sink.describe(), answer, True))
        except TimeoutError:
            results.append((sink.describe(), f"no answer within {sink.timeout:g} s", False))
        except ReactorError as exc:
            results.append((sink.describe(), f"{type(exc).__name__}: {exc}", False))
        finally:
            await sink.close()
    return results
