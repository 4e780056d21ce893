"""Each alert sink against a real receiver on loopback: a real Alertmanager (its v2 API),
a real SMTP server (aiosmtpd, STARTTLS or implicit TLS, AUTH, a certificate made here), a
local HTTP server for the webhook and for DingTalk (which checks the signature and can
answer "sending too fast"), and `reactor alert test` against them."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import LabUnavailable, client
from lab.alertmanager import Alertmanager
from lab.mariadb import free_port
from lab.receiver import Receiver
from reactor.alerts import policy
from reactor.alerts.model import Message, Severity
from reactor.alerts.sinks import build
from reactor.alerts.sinks.base import Sink
from reactor.config import parse_config
from reactor.errors import SinkRefused, SinkUnavailable
from tests.conftest import REPO, unavailable
from tests.mailserver import MailServer

HOST = "host01"
SECRET = "SECtest0123456789"
TOKEN = "tok-0123456789abcdef"


@pytest.fixture(scope="module")
def alertmanager() -> Iterator[Alertmanager]:
    try:
        am = Alertmanager(tempfile.mkdtemp(prefix="reactor-am-")).start()
    except LabUnavailable as exc:
        unavailable(str(exc))
    yield am
    am.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rx = Receiver(secret=SECRET).start()
    yield rx
    rx.stop()


@pytest.fixture
def mailserver(tmp_path: Path) -> Iterator[MailServer]:
    server = MailServer(tmp_path, user="reactor", password="mail-pw-1").start()
    yield server
    server.stop()


def sink_of(section: str, timeout: float = 5.0) -> Sink:
    config = parse_config("[database]\nuser = x\n" + section)
    return build(config.alerts.sinks[0], timeout)


def send(sink: Sink, message: Message) -> str:
    async def go() -> str:
        try:
            return await sink.send(message, message.created)
        finally:
            await sink.close()
    return asyncio.run(go())


def breaker(resolved: bool = False) -> Message:
    now = time.time()
    alert = policy.make("breaker_open", HOST, now - 10, "after 3 failed cycle(s)",
                        process_id=7, process_name="nginx", unit="nginx.service")
    if resolved:
        alert = alert.resolve(now, "breaker closed: trial cycle succeeded")
    return Message((alert,), created=now)


def test_alertmanager_holds_the_alert_with_its_labels_until_the_resolve(
        alertmanager: Alertmanager) -> None:
    am = sink_of(f"[alert.am]\ntype = alertmanager\nurl = {alertmanager.url}\n")
    firing = breaker()
    assert send(am, firing) == "HTTP 200"
    [held] = [a for a in alertmanager.alerts() if a["labels"]["host"] == HOST]
    assert held["labels"] == {"alertname": "ReactorBreakerOpen", "host": HOST,
                              "process": "nginx", "process_id": "7", "unit": "nginx.service",
                              "severity": "critical"}
    assert held["annotations"]["summary"].startswith("breaker opened for nginx")
    assert held["status"]["state"] == "active"
    over = firing.alerts[0].resolve(time.time(), "breaker closed")
    assert send(am, Message((over,))) == "HTTP 200"
    assert [a for a in alertmanager.alerts() if a["labels"]["host"] == HOST] == []


def test_alertmanager_refuses_a_wrong_path(alertmanager: Alertmanager) -> None:
    am = sink_of(f"[alert.am]\ntype = alertmanager\nurl = {alertmanager.url}/nothing-here\n")
    with pytest.raises(SinkRefused, match="HTTP 404"):
        send(am, breaker())


def test_webhook_posts_the_documented_body() -> None:
    rx = Receiver().start()
    try:
        hook = sink_of(f"[alert.hook]\ntype = webhook\nurl = {rx.url}\n")
        assert send(hook, breaker()) == "HTTP 200"
        [got] = rx.wait(1)
    finally:
        rx.stop()
    body = got.body
    assert got.headers["Content-Type"] == "application/json"
    assert {k: body[k] for k in ("version", "source", "status", "severity")} == {
        "version": 1, "source": "reactor", "status": "firing", "severity": "critical"}
    assert body["title"].startswith("[CRITICAL] host01: breaker opened for nginx")
    [alert] = body["alerts"]
    assert {k: alert[k] for k in ("event", "status", "severity", "host", "process_id",
                                  "process_name", "unit", "note")} == {
        "event": "breaker_open", "status": "firing", "severity": "critical", "host": HOST,
        "process_id": 7, "process_name": "nginx", "unit": "nginx.service",
        "note": "after 3 failed cycle(s)"}


def test_dingtalk_message_is_signed_markdown(receiver: Receiver) -> None:
    ding = sink_of(f"[alert.ding]\ntype = dingtalk\nurl = {receiver.url}?access_token={TOKEN}"
                   f"\nsecret = {SECRET}\n")
    assert send(ding, breaker()) == "HTTP 200, errcode 0"
    [got] = receiver.wait(1)
    assert got.signed is True and got.query["access_token"] == TOKEN
    assert got.body["msgtype"] == "markdown"
    assert got.body["markdown"]["title"].startswith("[CRITICAL] host01:")
    assert "**breaker opened for nginx" in got.body["markdown"]["text"]


def test_dingtalk_wrong_secret_is_refused_and_too_fast_is_retried_later(
        receiver: Receiver) -> None:
    wrong = sink_of(f"[alert.ding]\ntype = dingtalk\nurl = {receiver.url}?access_token={TOKEN}"
                    "\nsecret = SECnot-the-robots-secret\n")
    with pytest.raises(SinkRefused, match="errcode 310000"):
        send(wrong, breaker())
    receiver.answers.append((200, {"errcode": 130101, "errmsg": "send too fast"}))
    ding = sink_of(f"[alert.ding]\ntype = dingtalk\nurl = {receiver.url}?access_token={TOKEN}"
                   f"\nsecret = {SECRET}\n")
    with pytest.raises(SinkUnavailable, match="sending too fast"):
        send(ding, breaker())


def _smtp(server: MailServer, password: str = "mail-pw-1", extra: str = "") -> Sink:
    return sink_of(f"[alert.mail]\ntype = smtp\nhost = 127.0.0.1\nport = {server.port}\n"
                   f"user = reactor\npassword = {password}\nfrom = reactor@host01.example\n"
                   f"to = ops@example.com, dba@example.com\n{extra}")


def test_smtp_starttls_auth_delivers_to_every_recipient(mailserver: MailServer) -> None:
    mail = _smtp(mailserver, extra=f"ca_file = {mailserver.cert}\n")
    assert send(mail, breaker()).startswith("accepted: ")
    [got] = mailserver.wait(1)
    assert got["Subject"].strip().startswith("[CRITICAL] host01: breaker opened for nginx")
    assert got["X-Reactor-Severity"] == "critical"
    assert got["From"] == "reactor@host01.example"
    assert mailserver.envelopes[0][1] == ["ops@example.com", "dba@example.com"]
    body = got.get_content()
    assert "CRITICAL breaker_open" in body and "host01" in body and "nginx.service" in body
    assert mailserver.logins == [("reactor", True)]
    resolved = send(mail, breaker(resolved=True))
    assert resolved.startswith("accepted: ")
    assert mailserver.wait(2)[1]["X-Reactor-Severity"] == "resolved"


def test_smtp_wrong_password_is_a_clear_refusal(mailserver: MailServer) -> None:
    mail = _smtp(mailserver, password="not-the-password", extra=f"ca_file = {mailserver.cert}\n")
    with pytest.raises(SinkRefused, match=r"login as reactor refused: 535"):
        send(mail, breaker())
    assert mailserver.messages == []


def test_smtp_certificate_is_verified(mailserver: MailServer) -> None:
    """Without ca_file the self-signed certificate is not trusted: a refusal that says so."""
    with pytest.raises(SinkRefused, match="TLS certificate not trusted"):
        send(_smtp(mailserver), breaker())
    assert mailserver.logins == []  # the password never left


# aiosmtpd warns that AUTH does not require STARTTLS: with implicit TLS there is no plain text
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_implicit_tls(tmp_path: Path) -> None:
    server = MailServer(tmp_path, user="reactor", password="mail-pw-1", implicit=True).start()
    try:
        mail = _smtp(server, extra=f"tls = implicit\nca_file = {server.cert}\n")
        assert send(mail, breaker()).startswith("accepted: ")
        assert server.wait(1)[0]["X-Reactor-Severity"] == "critical"
    finally:
        server.stop()


def test_a_sink_that_is_down_is_unavailable() -> None:
    hook = sink_of(f"[alert.hook]\ntype = webhook\nurl = http://127.0.0.1:{free_port()}/\n")
    with pytest.raises(SinkUnavailable, match="ConnectError"):
        send(hook, breaker())


def _reactor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "reactor", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_reactor_alert_test_shows_what_each_sink_answered(
        tmp_path: Path, alertmanager: Alertmanager, mailserver: MailServer,
        receiver: Receiver) -> None:
    dead = free_port()
    sections: dict[str, dict[str, Any]] = {
        "database": {"user": "x", "password": "db-password-1"},
        "alert.am": {"type": "alertmanager", "url": alertmanager.url},
        "alert.ding": {"type": "dingtalk", "url": f"{receiver.url}?access_token={TOKEN}",
                       "secret": SECRET, "min_severity": "critical"},
        "alert.mail": {"type": "smtp", "host": "127.0.0.1", "port": mailserver.port,
                       "user": "reactor", "password": "wrong-mail-pw", "to": "ops@example.com",
                       "ca_file": mailserver.cert},
        "alert.gone": {"type": "dingtalk", "url": f"http://127.0.0.1:{dead}/?access_token="
                                                  f"{TOKEN}", "secret": SECRET},
        "logging": {"log_file": ""},
    }
    config = Path(client.write_config(tmp_path / "c.ini", sections))
    done = _reactor("alert", "test", "--config", str(config))
    lines = done.stdout.splitlines()
    assert done.returncode == 6, done.stdout + done.stderr
    assert any(line.startswith("am (alertmanager, 127.0.0.1:") and ": ok: HTTP 200" in line
               for line in lines), lines
    assert any(line.startswith("ding (dingtalk,") and ": ok: HTTP 200, errcode 0" in line
               for line in lines), lines
    assert any(line.startswith("mail (smtp,") and "FAILED: SinkRefused: login as reactor "
               "refused: 535" in line for line in lines), lines
    assert any(line.startswith("gone (dingtalk,") and "FAILED: SinkUnavailable" in line
               for line in lines), lines
    for secret in (TOKEN, SECRET, "wrong-mail-pw", "db-password-1"):
        assert secret not in done.stdout + done.stderr
    assert receiver.wait(1)[0].body["markdown"]["title"].startswith("[INFO] ")
    assert any(a["labels"]["alertname"] == "ReactorTest" for a in alertmanager.alerts())

    one = _reactor("alert", "test", "--sink", "ding", "--config", str(config))
    assert one.returncode == 0 and len(one.stdout.splitlines()) == 1, one.stdout + one.stderr
    assert _reactor("alert", "test", "--sink", "nope", "--config", str(config)).returncode == 2
    check = _reactor("check-config", "--config", str(config))
    assert check.returncode == 0 and "4 alert sink(s)" in check.stdout, check.stderr


def test_severity_order() -> None:
    assert Severity.CRITICAL > Severity.MAJOR > Severity.WARNING > Severity.INFO
    assert Severity.parse("major") is Severity.MAJOR


def _run_alerts(section: str, tmp_path: Path, until: Any, clock: Any = time.time,
                **alerts: object) -> tuple[Any, list[str]]:
    """An Alerts object (in this process, its real courier) with one sink; fires a breaker
    alert, runs until `until(alerts)` is true (at most 20 s), then stops. Returns it and
    the log lines."""
    from loguru import logger

    from reactor.alerts.dispatcher import Alerts
    from reactor.storage.statefile import StateFile

    settings = {"group_wait": 0, "retry_delay": 0.05, "retry_max_delay": 0.2, **alerts}
    text = "[database]\nuser = x\n[alerts]\n" + "".join(f"{k} = {v}\n"
                                                       for k, v in settings.items())
    config = parse_config(text + section)
    lines: list[str] = []
    handler = logger.add(lambda m: lines.append(str(m)), level="INFO")

    async def go() -> Any:
        sinks = [build(s, config.alerts.timeout) for s in config.alerts.sinks]
        alerts = Alerts(config.alerts, sinks, StateFile(None), spool=tmp_path / "spool",
                        host=HOST, clock=clock)
        task = asyncio.create_task(alerts.run())
        alerts.fire(breaker().alerts[0], clock())
        async with asyncio.timeout(20):
            while not until(alerts):  # noqa: ASYNC110 - counters, as metrics read them
                await asyncio.sleep(0.02)
        alerts.close()
        await task
        return alerts

    try:
        return asyncio.run(go()), lines
    finally:
        logger.remove(handler)


def test_a_wrong_smtp_password_in_the_daemon_is_an_error_and_the_mail_is_kept(
        tmp_path: Path, mailserver: MailServer) -> None:
    section = (f"[alert.mail]\ntype = smtp\nhost = 127.0.0.1\nport = {mailserver.port}\n"
               f"user = reactor\npassword = wrong-pw-77\nto = ops@example.com\n"
               f"ca_file = {mailserver.cert}\n")
    alerts, lines = _run_alerts(section, tmp_path, lambda a: a.stats["mail"].failed >= 2)
    stats = alerts.stats["mail"]
    assert stats.sent == 0 and stats.queued == 1 and "login as reactor refused: 535" in \
        stats.last_error
    assert any("ERROR" in line and "alert sink mail (smtp, 127.0.0.1:" in line and
               "refused: login as reactor refused: 535" in line for line in lines), lines
    assert not any("wrong-pw-77" in line for line in lines)
    assert len(list((tmp_path / "spool" / "mail").glob("*.json"))) == 1  # kept for later


def test_messages_older_than_max_age_are_dropped_with_a_count(tmp_path: Path) -> None:
    clock = Clock()
    section = f"[alert.hook]\ntype = webhook\nurl = http://127.0.0.1:{free_port()}/\n"

    def aged(alerts: Any) -> bool:
        if alerts.stats["hook"].failed >= 1:
            clock.now += 120  # past max_age: the courier's next look drops it
        return bool(alerts.stats["hook"].dropped)

    alerts, lines = _run_alerts(section, tmp_path, aged, clock, max_age=60)
    assert alerts.stats["hook"].dropped == 1 and alerts.stats["hook"].queued == 0
    assert any("ERROR" in line and "dropped 1 undelivered message(s) (1 alert(s)) older than "
               "max_age (60 s)" in line for line in lines), lines
    assert list((tmp_path / "spool" / "hook").glob("*.json")) == []


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now
