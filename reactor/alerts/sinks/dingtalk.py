"""DingTalk's custom robot: one markdown message per alert message.

    POST <url>[&timestamp=<ms>&sign=<signature>]
    {"msgtype": "markdown", "markdown": {"title": ..., "text": ...}}

Signing (`secret`, DingTalk's "加签"): timestamp = now in milliseconds; the signature is
base64(HMAC-SHA256(key=secret, "<timestamp>\\n<secret>")), URL-encoded. DingTalk answers
HTTP 200 with {"errcode": 0, "errmsg": "ok"}; errcode 130101 means "sending too fast" (a
robot takes 20 messages a minute): retried with backoff. Any other errcode (a wrong token,
signature, keyword or IP) is a refusal. A sliding window keeps this sink within 20
messages in any 60 s before DingTalk has to say so.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import deque
from urllib.parse import quote_plus

from reactor.alerts import render
from reactor.alerts.model import Message
from reactor.alerts.sinks.base import HttpSink
from reactor.config import SinkConfig
from reactor.errors import SinkRefused, SinkUnavailable

RATE_LIMIT = 20  # messages ...
RATE_WINDOW = 60.0  # ... per this many seconds, per robot
TOO_FAST = 130101


def sign(secret: str, timestamp_ms: int) -> str:
    """DingTalk's signature of a timestamp, URL-encoded as its documentation does."""
    to_sign = f"{timestamp_ms}\n{secret}".encode()
    digest = hmac.new(secret.encode(), to_sign, hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest))


def signed_url(url: str, secret: str, now: float) -> str:
    if not secret:
        return url
    timestamp = int(round(now * 1000))
    return f"{url}{'&' if '?' in url else '?'}timestamp={timestamp}&sign={sign(secret, timestamp)}"


class RateWindow:
    """At most `limit` events in any `window` seconds (pure; the caller gives `now`)."""

    def __init__(self, limit: int = RATE_LIMIT, window: float = RATE_WINDOW) -> None:
        self.limit = limit
        self.window = window
        self._sent: deque[float] = deque()

    def delay(self, now: float) -> float:
        while self._sent and now - self._sent[0] >= self.window:
            self._sent.popleft()
        if len(self._sent) < self.limit:
            return 0.0
        return self._sent[0] + self.window - now

    def record(self, now: float) -> None:
        self._sent.append(now)


class DingTalkSink(HttpSink):
    kind = "dingtalk"

    def __init__(self, cfg: SinkConfig, timeout: float) -> None:
        super().__init__(cfg, timeout)
        self.window = RateWindow()

    def delay(self, now: float) -> float:
        return self.window.delay(now)

    async def send(self, message: Message, now: float) -> str:
        self.window.record(now)
        payload = {"msgtype": "markdown", "markdown": {
            "title": render.title(message.alerts),
            "text": render.text(message.alerts, markdown=True)}}
        response = await self.post(signed_url(self.cfg.url, self.cfg.secret, now), payload)
        try:
            answer = response.json()
            code = int(answer.get("errcode", -1))
            text = str(answer.get("errmsg", ""))
        except (ValueError, AttributeError, TypeError):
            raise SinkUnavailable(f"HTTP {response.status_code} but not DingTalk's JSON answer: "
                                  f"{response.text[:100]!r}") from None
        if code == TOO_FAST:
            raise SinkUnavailable(f"DingTalk: sending too fast (errcode {code}: {text})")
        if code != 0:
            raise SinkRefused(f"DingTalk errcode {code}: {text}")
        return f"HTTP {response.status_code}, errcode 0"
