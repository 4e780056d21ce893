"""Email: one mail per message, to every address of `to`, through aiosmtplib.

    Subject: [CRITICAL] host01: breaker opened for nginx: not restarted until it resets
    X-Reactor-Severity: critical          (resolved, when every alert in it is over)
    the text of render.text() as the body

`tls = starttls` (default, port 587) upgrades the connection before anything else is said;
`implicit` (port 465) speaks TLS from the first byte; `none` (port 25) never sends a
password (the configuration refuses it). The server's certificate is verified, against the
system's CAs or `ca_file`. `user` and `password`: AUTH after the TLS handshake.

Error handling: a refused login, refused recipients or an untrusted certificate are
`SinkRefused` (the configuration must change); a server that is down, times out or answers
4xx is `SinkUnavailable`; a 5xx answer to the message itself is `AlertRejected`.
"""

from __future__ import annotations

import email.utils
import socket
import ssl
from email.message import EmailMessage

import aiosmtplib

from reactor.alerts import render
from reactor.alerts.model import Message
from reactor.alerts.sinks.base import Sink
from reactor.errors import AlertRejected, SinkRefused, SinkUnavailable

HOST = socket.gethostname()


def mail(message: Message, sender: str, to: tuple[str, ...], now: float) -> EmailMessage:
    alerts = message.alerts
    out = EmailMessage()
    out["Subject"] = render.title(alerts)
    out["From"] = sender
    out["To"] = ", ".join(to)
    out["Date"] = email.utils.formatdate(now, localtime=True)
    out["Message-ID"] = email.utils.make_msgid("reactor")
    out["X-Reactor-Severity"] = "resolved" if message.resolved else message.severity.label
    out.set_content(render.text(alerts))
    return out


def _reply(exc: aiosmtplib.SMTPResponseException) -> str:
    return f"{exc.code} {' '.join(str(exc.message).split())}"


class SmtpSink(Sink):
    kind = "smtp"

    @property
    def sender(self) -> str:
        return self.cfg.sender or f"reactor@{HOST}"

    async def send(self, message: Message, now: float) -> str:
        cfg = self.cfg
        try:
            _, answer = await aiosmtplib.send(
                mail(message, self.sender, cfg.to, now), hostname=cfg.host, port=cfg.port,
                username=cfg.user or None, password=cfg.password or None,
                use_tls=cfg.tls == "implicit", start_tls=cfg.tls == "starttls",
                tls_context=self.tls_context(), timeout=self.timeout)
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise SinkRefused(f"login as {cfg.user} refused: {_reply(exc)}") from None
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refused = ", ".join(f"{r.recipient} ({_reply(r)})" for r in exc.recipients)
            raise SinkRefused(f"every recipient refused: {refused}") from None
        except aiosmtplib.SMTPDataError as exc:
            if exc.code >= 500:
                raise AlertRejected(f"message refused: {_reply(exc)}") from None
            raise SinkUnavailable(f"message deferred: {_reply(exc)}") from None
        except aiosmtplib.SMTPResponseException as exc:
            if exc.code >= 500:
                raise SinkRefused(f"server said {_reply(exc)}") from None
            raise SinkUnavailable(f"server said {_reply(exc)}") from None
        except aiosmtplib.SMTPException as exc:
            if "not supported" not in str(exc):
                raise _unavailable(exc) from None
            # STARTTLS or AUTH not offered: what the configuration asks of this server
            raise SinkRefused(f"{exc} (see tls, user)") from None
        except OSError as exc:
            raise _unavailable(exc) from None
        return f"accepted: {' '.join(str(answer).split())}"


def _unavailable(exc: Exception) -> Exception:
    """A connection that failed: refused for an untrusted certificate, else unavailable."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, ssl.SSLCertVerificationError):
            return SinkRefused(f"TLS certificate not trusted: {cause.verify_message} "
                               "(set ca_file to the CA that signed it)")
        cause = cause.__cause__ or cause.__context__
    return SinkUnavailable(f"{type(exc).__name__}: {exc}")
