"""An HTTP receiver on loopback for reactor's webhook and DingTalk alerts (tests, benchmark).

    rx = Receiver(secret="SEC...").start()      # dingtalk: checks the signature
    ... [alert.x] url = rx.url ...
    rx.wait(1)                                  # the first POST, parsed
    rx.answers.append((200, {"errcode": 130101, "errmsg": "send too fast"}))
    rx.down(); ...; rx.up()                     # a sink outage, same port
    rx.stop()

Every POST is recorded with its arrival time (`Delivery.at`, the receiver's wall clock).
With `secret`, a request whose DingTalk signature (timestamp + sign in the query) does not
verify is answered errcode 310000 and recorded with `signed=False`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

BAD_SIGNATURE = 310000  # DingTalk: sign not match


@dataclass(frozen=True)
class Delivery:
    at: float
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    signed: bool | None  # None: no secret to check against
    answered: int  # HTTP status sent back
    answer: Any  # and the JSON body

    @property
    def accepted(self) -> bool:
        """Answered 200 with no DingTalk error code: a delivery as the sender sees it."""
        code = self.answer.get("errcode", 0) if isinstance(self.answer, dict) else 0
        return self.answered == 200 and code == 0


def dingtalk_signature_ok(secret: str, query: dict[str, str], now: float) -> bool:
    """DingTalk's check: sign == base64(HMAC-SHA256(secret, "timestamp\\nsecret")) and the
    timestamp within an hour of now."""
    try:
        timestamp = int(query["timestamp"])
        given = base64.b64decode(query["sign"])
    except (KeyError, ValueError):
        return False
    want = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    return hmac.compare_digest(given, want) and abs(now * 1000 - timestamp) < 3_600_000


class Receiver:
    def __init__(self, *, secret: str = "", host: str = "127.0.0.1", port: int = 0) -> None:
        self.secret = secret
        self.host = host
        self.port = port
        self.deliveries: list[Delivery] = []
        # scripted answers, used in order: (HTTP status, JSON body); then 200 and an OK body
        self.answers: deque[tuple[int, Any]] = deque()
        self._cond = threading.Condition()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/hook"

    def start(self) -> Receiver:
        return self.up()

    def up(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                receiver._handle(self)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        ThreadingHTTPServer.allow_reuse_address = True
        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="receiver")
        self._thread.start()
        return self

    def down(self) -> None:
        """Stop listening (connections are refused) until up() on the same port."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    stop = down

    def _handle(self, request: BaseHTTPRequestHandler) -> None:
        at = time.time()
        length = int(request.headers.get("Content-Length") or 0)
        raw = request.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        parts = urlsplit(request.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        signed = dingtalk_signature_ok(self.secret, query, at) if self.secret else None
        with self._cond:
            if signed is False:
                status, answer = 200, {"errcode": BAD_SIGNATURE, "errmsg": "sign not match"}
            elif self.answers:
                status, answer = self.answers.popleft()
            else:
                status, answer = 200, {"errcode": 0, "errmsg": "ok"}
            self.deliveries.append(Delivery(at, parts.path, query, dict(request.headers),
                                            body, signed, status, answer))
            self._cond.notify_all()
        data = json.dumps(answer).encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)

    def wait(self, count: int, timeout: float = 20.0) -> list[Delivery]:
        """Until `count` requests arrived; every delivery so far. Raises AssertionError
        on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.deliveries)} request(s) within "
                                         f"{timeout:g} s, wanted {count}")
                self._cond.wait(left)
            return list(self.deliveries)

    def accepted(self) -> list[Delivery]:
        with self._cond:
            return [d for d in self.deliveries if d.accepted]
