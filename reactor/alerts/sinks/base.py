"""What every alert sink is, and the HTTP plumbing the HTTP sinks share.

A sink turns a `Message` into one delivery (an HTTP POST, a mail) and says what the other
side answered, or raises:
- `SinkUnavailable`: not reached, or asked to wait (connection refused, timeout, HTTP 408,
  429 or 5xx, DingTalk's rate limit, an SMTP 4xx): retried with backoff;
- `SinkRefused`: the sink refused us (HTTP 401/403/404, a bad login, an untrusted
  certificate): the configuration must change; the message is kept and retried slowly;
- `AlertRejected`: the sink refused the message itself (HTTP 400/413/422): dropped.
Foreign exceptions (httpx, aiosmtplib, ssl) are mapped here, in the adapters.

Nothing a sink logs or raises holds its URL or a secret: sinks are named by `describe()`
(name, type, host and port).
"""

from __future__ import annotations

import ssl
from abc import ABC, abstractmethod
from typing import Any
from urllib.parse import urlsplit

import httpx

from reactor.alerts.model import Alert, Message, Severity
from reactor.config import SinkConfig
from reactor.errors import AlertRejected, SinkRefused, SinkUnavailable

USER_AGENT = "reactor-alerts"
BODY_SHOWN = 200  # characters of an error answer quoted in the error


class Sink(ABC):
    kind = ""

    def __init__(self, cfg: SinkConfig, timeout: float) -> None:
        self.cfg = cfg
        self.name = cfg.name
        self.min_severity = Severity.parse(cfg.min_severity)
        self.timeout = timeout

    def wants(self, alert: Alert) -> bool:
        return alert.severity >= self.min_severity

    def describe(self) -> str:
        """name (type, host:port): what logs call the sink (never the URL: tokens)."""
        if self.cfg.url:
            parts = urlsplit(self.cfg.url)
            where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
        else:
            where = f"{self.cfg.host}:{self.cfg.port}"
        return f"{self.name} ({self.kind}, {where})"

    def delay(self, now: float) -> float:
        """Seconds to wait before the next send (a sink's own rate limit); 0: none."""
        return 0.0

    def tls_context(self) -> ssl.SSLContext:
        """Verified TLS: the system's CAs, or only those of `ca_file`."""
        return ssl.create_default_context(cafile=self.cfg.ca_file or None)

    @abstractmethod
    async def send(self, message: Message, now: float) -> str:
        """Deliver; returns the answer ("HTTP 200", "250 OK") or raises (see above)."""

    async def close(self) -> None:
        return None


class HttpSink(Sink):
    """A sink that POSTs JSON over one pooled httpx client (created in the event loop)."""

    def __init__(self, cfg: SinkConfig, timeout: float) -> None:
        super().__init__(cfg, timeout)
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=self.tls_context(), timeout=self.timeout, follow_redirects=False,
                headers={"User-Agent": USER_AGENT})
        return self._client

    async def post(self, url: str, payload: Any) -> httpx.Response:
        """POST payload as JSON; a 2xx response, or a mapped error."""
        try:
            response = await self.client().post(url, json=payload)
        except httpx.TimeoutException:
            raise SinkUnavailable(f"no answer within {self.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise map_transport_error(exc) from exc
        return check_status(response)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def map_transport_error(exc: Exception) -> Exception:
    """httpx's (or an SSL) failure to talk to the sink -> SinkRefused for a certificate
    that does not verify, else SinkUnavailable. The message never holds the URL."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return SinkRefused(f"TLS certificate not trusted: {cause.verify_message} "
                               "(set ca_file to the CA that signed it)")
        cause = cause.__cause__ or cause.__context__
    what = str(exc) or type(exc).__name__
    return SinkUnavailable(f"{type(exc).__name__}: {what}")


def check_status(response: httpx.Response) -> httpx.Response:
    status = response.status_code
    if 200 <= status < 300:
        return response
    body = " ".join(response.text.split())[:BODY_SHOWN]
    what = f"HTTP {status}" + (f": {body}" if body else "")
    if status in (408, 425, 429) or status >= 500:
        raise SinkUnavailable(what)
    if status in (400, 413, 422):
        raise AlertRejected(what)
    if 300 <= status < 400:
        raise SinkRefused(f"HTTP {status}: a redirect (not followed; give the final URL)")
    raise SinkRefused(what)
