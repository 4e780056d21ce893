"""A real SMTP server on loopback for the alert tests: aiosmtpd with STARTTLS (or implicit
TLS) and AUTH, a certificate made by openssl for 127.0.0.1, and every mail kept.

    server = MailServer(tmp_path, user="reactor", password="pw").start()
    ... [alert.mail] host = 127.0.0.1, port = server.port, ca_file = server.cert ...
    server.wait(1)[0]["Subject"]
    server.stop()
"""

from __future__ import annotations

import email
import email.message
import email.policy
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session

from lab.mariadb import free_port


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own CA)."""
    cert, key = directory / "smtp-cert.pem", directory / "smtp-key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-keyout", str(key), "-out", str(cert), "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class MailServer:
    def __init__(self, directory: Path, *, user: str, password: str,
                 implicit: bool = False) -> None:
        self.directory = directory
        self.user = user
        self.password = password
        self.implicit = implicit
        self.port = free_port()
        self.cert, self.key = make_certificate(directory)
        self.messages: list[email.message.EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.logins: list[tuple[str, bool]] = []
        self._cond = threading.Condition()
        self._controller: Controller | None = None

    def start(self) -> MailServer:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert, self.key)
        options: dict[str, Any] = {"authenticator": self._authenticate,
                                   "auth_require_tls": True, "auth_required": True}
        if self.implicit:
            # aiosmtpd counts only STARTTLS as TLS for AUTH; this connection is TLS anyway
            options.update(ssl_context=context, auth_require_tls=False)
        else:
            options.update(tls_context=context, require_starttls=True)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port,
                                      server_hostname="localhost", **options)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def _authenticate(self, server: SMTP, session: Session, envelope: Envelope,
                      mechanism: str, auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login.decode() == self.user
              and auth_data.password.decode() == self.password)
        with self._cond:
            self.logins.append((auth_data.login.decode() if isinstance(
                auth_data, LoginPassword) else "?", ok))
        return AuthResult(success=ok, handled=False)  # aiosmtpd answers 535 itself

    async def handle_DATA(self, server: SMTP, session: Session,  # noqa: N802 - aiosmtpd
                          envelope: Envelope) -> str:
        content = envelope.original_content or envelope.content or b""
        data = content if isinstance(content, bytes) else content.encode()
        parsed = email.message_from_bytes(data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        with self._cond:
            self.messages.append(parsed)
            self.envelopes.append((str(envelope.mail_from), list(envelope.rcpt_tos)))
            self._cond.notify_all()
        return "250 Message accepted for delivery"

    def wait(self, count: int, timeout: float = 20.0) -> list[email.message.EmailMessage]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self.messages)} mail(s) within {timeout:g} s, "
                                         f"wanted {count}")
                self._cond.wait(left)
            return list(self.messages)
