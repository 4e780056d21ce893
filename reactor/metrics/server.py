"""The HTTP listener: /metrics, /status.json and /healthz, inside the daemon's event loop.

    GET /metrics       the registry in Prometheus text format (OpenMetrics when asked for)
    GET /status.json   the status document (status.py)
    GET /healthz       200 "ok", or 503 with one reason per line (Snapshot.problems)

A small HTTP/1.1 server on asyncio streams, not a thread: a scrape reads the daemon's
objects in the loop that changes them, so it never sees them half-changed, and rendering a
few hundred series takes well under a millisecond (benchmarks/scrape.py measures what a
scrape every 100 ms costs the binlog dispatch). Keep-alive is supported (Prometheus keeps
its connection open); at most MAX_CONNECTIONS at once, each closed after IDLE_TIMEOUT
seconds without a request. Only GET and HEAD; no request body is read.

Error handling: a port that is taken or an address that cannot be bound is a ConfigError
naming `[metrics] listen` (exit 1 at start). A client that sends garbage gets 400 and is
closed; one that goes away is forgotten; an exception while rendering is logged with its
traceback and answered 500: a scrape never stops the daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

from loguru import logger
from prometheus_client.exposition import choose_encoder

from reactor.errors import ConfigError

MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 30.0  # seconds a kept-alive connection may wait for its next request
MAX_HEADER = 8192  # bytes of request line and headers
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           500: "Internal Server Error", 503: "Service Unavailable"}

Response = tuple[int, str, bytes]  # status, content type, body
TEXT = "text/plain; charset=utf-8"


class Routes:
    """What each path answers; the server only speaks HTTP."""

    def __init__(self, metrics: Callable[[str], tuple[bytes, str]],
                 status: Callable[[], dict[str, object]],
                 problems: Callable[[], list[str]]) -> None:
        self.metrics = metrics  # Accept header -> (body, content type)
        self.status = status
        self.problems = problems

    def answer(self, path: str, accept: str) -> Response:
        path = path.split("?", 1)[0]
        if path == "/metrics":
            body, content_type = self.metrics(accept)
            return 200, content_type, body
        if path == "/status.json":
            return 200, "application/json", (json.dumps(self.status(), indent=1)
                                              + "\n").encode()
        if path == "/healthz":
            problems = self.problems()
            if problems:
                return 503, TEXT, ("\n".join(problems) + "\n").encode()
            return 200, TEXT, b"ok\n"
        if path == "/":
            return 200, "text/html; charset=utf-8", (
                b"<html><body><h1>reactor</h1><ul><li><a href=/metrics>/metrics</a></li>"
                b"<li><a href=/status.json>/status.json</a></li>"
                b"<li><a href=/healthz>/healthz</a></li></ul></body></html>\n")
        return 404, TEXT, b"not found: /metrics, /status.json, /healthz\n"


def render_metrics(registry: object) -> Callable[[str], tuple[bytes, str]]:
    """The /metrics renderer of a prometheus_client registry, by Accept header."""
    def render(accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return encoder(registry), content_type  # type: ignore[arg-type]

    return render


class MetricsServer:
    def __init__(self, host: str, port: int, routes: Routes) -> None:
        self.host = host
        self.port = port
        self.routes = routes
        self.requests = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def start(self) -> None:
        """Bind now: a port that is taken fails the start, before READY."""
        try:
            self._server = await asyncio.start_server(
                self._connection, self.host, self.port, reuse_address=True,
                limit=MAX_HEADER)
        except OSError as exc:  # asyncio rewrites the message: say it the usual way
            why = os.strerror(exc.errno) if exc.errno else str(exc)
            raise ConfigError([f"[metrics] listen: cannot listen on {self.host}:{self.port}: "
                               f"{why}"]) from None
        logger.info("metrics: listening on {} (/metrics, /status.json, /healthz)", self.url)

    async def serve(self) -> None:
        """Serve until cancelled (the caller owns this task); then close every connection."""
        assert self._server is not None, "start() first"
        try:
            await self._server.serve_forever()
        finally:
            self.close()

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()

    async def _connection(self, reader: asyncio.StreamReader,
                          writer: asyncio.StreamWriter) -> None:
        if len(self._writers) >= MAX_CONNECTIONS:
            writer.close()
            return
        self._writers.add(writer)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, TimeoutError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader,
                        writer: asyncio.StreamWriter) -> bool:
        """One request and its response; False when the connection is to be closed."""
        async with asyncio.timeout(IDLE_TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            await self._send(writer, (400, TEXT, b"bad request\n"), close=True)
            return False
        method, path, version = parts
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        connection = headers.get("connection", "").lower()
        close = connection == "close" or (version == "HTTP/1.0" and connection != "keep-alive")
        if method not in ("GET", "HEAD"):
            response: Response = (405, TEXT, b"only GET and HEAD\n")
        else:
            self.requests += 1
            try:
                response = self.routes.answer(path, headers.get("accept", ""))
            except Exception as exc:  # noqa: BLE001 - a scrape must never stop the daemon
                logger.opt(exception=exc).error("metrics: {} failed", path)
                response = (500, TEXT, f"internal error: {exc!r}\n".encode())
        await self._send(writer, response, close=close, head=method == "HEAD")
        return not close

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, response: Response, *, close: bool,
                    head: bool = False) -> None:
        status, content_type, body = response
        writer.write((f"HTTP/1.1 {status} {REASONS[status]}\r\n"
                      f"Content-Type: {content_type}\r\n"
                      f"Content-Length: {len(body)}\r\n"
                      "Cache-Control: no-store\r\n"
                      f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode())
        if not head:
            writer.write(body)
        await writer.drain()
