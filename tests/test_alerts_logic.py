"""The alerts' pure logic, with a clock the tests move (no sleeps, no servers): which step or
notice is which alert at which severity, cooldown, grouping, routing by min_severity, the
resolve going to the sinks that got the alert, conditions that must last, DingTalk's
signature and rate limit, the text people read, and the spool that survives a restart."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import pytest

from lab.receiver import dingtalk_signature_ok
from reactor.alerts import policy, render
from reactor.alerts.dispatcher import Alerts
from reactor.alerts.model import Alert, Message, Severity
from reactor.alerts.noise import Cooldown, Grouper
from reactor.alerts.sinks.base import Sink
from reactor.alerts.sinks.dingtalk import RateWindow, sign, signed_url
from reactor.alerts.spool import SinkQueue
from reactor.config import SinkConfig, parse_config
from reactor.errors import ConfigError
from reactor.events import Condition, Happening, Notice, Observers, Step
from reactor.storage.statefile import StateFile

T0 = 1_800_000_000.0
HOST = "host01"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Quiet(Sink):
    """A sink that is never asked to send here: these tests read the queues."""

    kind = "webhook"

    async def send(self, message: Message, now: float) -> str:
        raise AssertionError("not in these tests")


def sink(name: str, min_severity: str = "warning", kind: str = "webhook") -> Sink:
    cfg = SinkConfig(name=name, type=kind, min_severity=min_severity, url="http://127.0.0.1:9/",
                     secret="", ca_file="", host="", port=0, tls="starttls", user="",
                     password="", sender="", to=())
    out = Quiet(cfg, 5.0)
    out.kind = kind
    return out


def config(**alerts: object) -> object:
    text = "[database]\nuser = x\n[alerts]\n" + "".join(f"{k} = {v}\n" for k, v in alerts.items())
    return parse_config(text).alerts


def step(name: str, pid: int = 7, detail: str = "", at: float = T0) -> Step:
    return Step(at, 1, pid, f"app-{pid}", f"app-{pid}.service", name, "binlog", 2.0, detail)


def make_alerts(tmp_path: Path | None = None, sinks: list[Sink] | None = None,
                state: StateFile | None = None, observers: Observers | None = None,
                **settings: object) -> tuple[Alerts, Clock]:
    clock = Clock()
    settings.setdefault("group_wait", 5)
    alerts = Alerts(config(**settings), sinks or [sink("hook")],  # type: ignore[arg-type]
                    state or StateFile(None), spool=tmp_path, observers=observers,
                    host=HOST, clock=clock)
    return alerts, clock


def sent(alerts: Alerts, name: str = "hook") -> list[Message]:
    return list(alerts.queues[name].items)


# ------------------------------------------------------------------ policy


@pytest.mark.parametrize(("name", "event", "severity"), [
    ("breaker_open", "breaker_open", Severity.CRITICAL),
    ("cycle_failed", "cycle_failed", Severity.MAJOR),
    ("refused", "refused", Severity.WARNING),
])
def test_steps_that_are_alerts(name: str, event: str, severity: Severity) -> None:
    [action] = policy.from_step(step(name, detail="why"), HOST)
    assert isinstance(action, policy.Fire)
    alert = action.alert
    assert (alert.event, alert.severity, alert.host) == (event, severity, HOST)
    assert (alert.process_id, alert.process_name, alert.unit) == (7, "app-7", "app-7.service")
    assert alert.note == "why" and alert.at == T0 and alert.key == f"{event}:7"


def test_recoveries_resolve_and_a_restart_is_info() -> None:
    closed = policy.from_step(step("breaker_closed"), HOST)
    assert closed == [policy.Resolve("breaker_open:7", T0, "breaker closed: trial cycle "
                                                          "succeeded")]
    [healthy] = policy.from_step(step("health_ok"), HOST)
    assert isinstance(healthy, policy.Resolve) and healthy.key == "cycle_failed:7"
    resolve, info = policy.from_step(step("cleared"), HOST)
    assert isinstance(resolve, policy.Resolve) and resolve.key == "cycle_failed:7"
    assert isinstance(info, policy.Fire) and info.alert.severity is Severity.INFO
    for quiet in ("detected", "restart_issued", "restarted", "skipped", "health_failed"):
        assert policy.from_step(step(quiet), HOST) == []


def test_notices() -> None:
    [polling] = policy.from_notice(Notice(Condition.POLLING, "binlog refused", at=T0), HOST, 60)
    assert isinstance(polling, policy.Fire)
    assert polling.alert.severity is Severity.CRITICAL and polling.alert.key == "polling"
    [armed] = policy.from_notice(Notice(Condition.DATABASE_DOWN, "gone", at=T0), HOST, 60)
    assert isinstance(armed, policy.Arm) and armed.due == T0 + 60
    assert armed.alert.summary == "database unreachable for more than 60 s"
    [over] = policy.from_notice(Notice(Condition.BUS_DOWN, "back", active=False, at=T0), HOST,
                                60)
    assert over == policy.Resolve("bus_down", T0, "back")
    [caught] = policy.from_notice(Notice(Happening.SWEEP_CAUGHT, "2 alarm(s)", at=T0,
                                         process_ids=(3, 4)), HOST, 60)
    assert isinstance(caught, policy.Fire) and caught.alert.severity is Severity.WARNING
    assert caught.alert.note == "2 alarm(s) (process ids 3, 4)"
    for kind in (Happening.POSITION_LOST, Happening.EVENT_UNREADABLE):
        [fire] = policy.from_notice(Notice(kind, "x", at=T0), HOST, 60)
        assert isinstance(fire, policy.Fire) and fire.alert.severity is Severity.WARNING


# ------------------------------------------------------------------ cooldown, grouping


def test_cooldown_per_event_and_process_and_kept_across_restarts(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    cool = Cooldown(3600, state.alert_cooldowns(), state.set_alert_cooldown)
    assert cool.allow("breaker_open:7", T0)
    assert not cool.allow("breaker_open:7", T0 + 3599)
    assert cool.allow("breaker_open:8", T0 + 1)  # another process
    assert cool.allow("cycle_failed:7", T0 + 1)  # another event
    state.close()
    again = StateFile(tmp_path / "state.json")
    cool = Cooldown(3600, again.alert_cooldowns(), again.set_alert_cooldown)
    assert not cool.allow("breaker_open:7", T0 + 10)  # restart: still cooling down
    assert cool.allow("breaker_open:7", T0 + 3600)
    assert cool.prune(T0 + 3601 + 3600) == 3
    assert again.alert_cooldowns() == {}
    assert Cooldown(0).allow("x", T0) and Cooldown(0).allow("x", T0)  # 0: no cooldown


def test_grouper_window_opens_with_the_first_alert() -> None:
    g = Grouper(5)
    alert = policy.make("refused", HOST, T0, process_id=1)
    assert g.add("a", alert, T0) == T0 + 5
    assert g.add("a", alert, T0 + 4) == T0 + 5
    assert g.due(T0 + 4.9) == [] and g.next_due() == T0 + 5
    assert [(s, len(alerts)) for s, alerts in g.due(T0 + 5)] == [("a", 2)]
    assert g.next_due() is None and g.pending("a") == 0


def test_a_storm_is_one_message_per_sink() -> None:
    alerts, clock = make_alerts(sinks=[sink("hook"), sink("mail", "major", "smtp")])
    for pid in range(1000):
        alerts.on_step(step("cycle_failed", pid, "no such unit"))
    alerts.tick(clock.now + 4.9)
    assert sent(alerts) == []
    alerts.tick(clock.now + 5)
    for name in ("hook", "mail"):
        [message] = sent(alerts, name)
        assert len(message.alerts) == 1000
    title = render.title(message.alerts)
    assert title == "[MAJOR] host01: 1000 processes failed to restart"
    head = render.text(message.alerts).splitlines()[0]
    assert head.startswith("1000 processes failed to restart on host01: app-0, app-1,")
    assert head.endswith("app-9 and 990 more")


def test_min_severity_routes_and_info_is_off_by_default() -> None:
    alerts, clock = make_alerts(sinks=[sink("crit", "critical"), sink("hook"),
                                       sink("all", "info")])
    alerts.on_step(step("cycle_failed", 1))
    alerts.on_step(step("breaker_open", 1))
    alerts.on_step(step("cleared", 2))
    alerts.tick(clock.now + 5)
    events = {name: sorted(a.event for m in sent(alerts, name) for a in m.alerts)
              for name in ("crit", "hook", "all")}
    assert events == {"crit": ["breaker_open"], "hook": ["breaker_open", "cycle_failed"],
                      "all": ["breaker_open", "cycle_failed", "restarted"]}


def test_no_sink_wants_it_so_no_cooldown_is_spent() -> None:
    alerts, clock = make_alerts(sinks=[sink("hook")])
    alerts.on_step(step("cleared", 2))  # info: nobody takes it
    assert alerts.cooldown.marks == {} and alerts.counts.fired == 0


def test_the_same_alert_is_held_back_within_the_cooldown() -> None:
    alerts, clock = make_alerts(cooldown=3600)
    for n in range(5):  # a flapping unit: its breaker opens again and again
        clock.now = T0 + n * 60
        alerts.on_step(step("breaker_open", 7, at=clock.now))
        alerts.tick(clock.now + 5)
    assert [len(m.alerts) for m in sent(alerts)] == [1]
    assert alerts.counts.fired == 1 and alerts.counts.suppressed == 4
    clock.now = T0 + 3600
    alerts.on_step(step("breaker_open", 7, at=clock.now))
    alerts.tick(clock.now + 5)
    assert len(sent(alerts)) == 2  # an hour later: told again


def test_resolve_goes_to_the_sinks_that_got_the_alert(tmp_path: Path) -> None:
    alerts, clock = make_alerts(sinks=[sink("crit", "critical"), sink("hook")])
    alerts.on_step(step("cycle_failed", 7))
    alerts.tick(clock.now + 5)
    alerts.on_step(step("health_ok", 7))
    alerts.on_step(step("breaker_closed", 7))  # no breaker alert went out: nothing
    alerts.tick(clock.now + 10)
    [_, resolved] = sent(alerts, "hook")
    [over] = resolved.alerts
    assert over.resolved and over.event == "cycle_failed" and over.severity is Severity.MAJOR
    assert over.resolution.startswith("restarted and healthy")
    assert sent(alerts, "crit") == []
    assert render.title(resolved.alerts) == "[RESOLVED] host01: resolved: app-7 restarted"


def test_a_condition_must_last_unreachable_after() -> None:
    observers = Observers()
    alerts, clock = make_alerts(observers=observers, unreachable_after=60)
    observers.add(alerts)
    observers.begin(Condition.DATABASE_DOWN, "connection refused")  # at the real time
    began = observers.active[Condition.DATABASE_DOWN].at
    observers.end(Condition.DATABASE_DOWN)  # back within a minute: no alert
    alerts.tick(began + 61 + 5)
    assert sent(alerts) == [] and alerts.armed == {}
    observers.begin(Condition.DATABASE_DOWN, "connection refused")
    began = observers.active[Condition.DATABASE_DOWN].at
    alerts.tick(began + 59)
    assert alerts.armed and sent(alerts) == []
    clock.now = began + 60
    alerts.tick(clock.now)
    alerts.tick(clock.now + 5)
    [message] = sent(alerts)
    assert message.alerts[0].severity is Severity.CRITICAL
    assert message.alerts[0].summary == "database unreachable for more than 60 s"
    observers.end(Condition.DATABASE_DOWN, "database reachable again")
    alerts.tick(clock.now + 10)
    assert sent(alerts)[1].alerts[0].resolution == "database reachable again"


def test_firing_alerts_survive_a_restart_and_stale_conditions_resolve(tmp_path: Path) -> None:
    state = StateFile(tmp_path / "state.json")
    alerts, clock = make_alerts(state=state)
    alerts.on_step(step("breaker_open", 7))
    alerts.on_notice(Notice(Condition.POLLING, "binlog refused", at=T0))
    alerts.tick(T0 + 5)
    state.close()
    state = StateFile(tmp_path / "state.json")
    assert set(state.firing_alerts()) == {"breaker_open:7", "polling"}
    observers = Observers()  # after the restart, reactor streams again: no POLLING
    alerts, clock = make_alerts(state=state, observers=observers, unreachable_after=60)
    alerts.on_step(step("breaker_closed", 7))
    alerts.tick(T0 + 5)
    [closed] = sent(alerts)
    assert closed.alerts[0].resolved and closed.alerts[0].event == "breaker_open"
    alerts.tick(T0 + 60)
    alerts.tick(T0 + 65)
    assert sent(alerts)[1].alerts[0].event == "polling" and sent(alerts)[1].resolved
    assert state.firing_alerts() == {}


# ------------------------------------------------------------------ DingTalk


def test_dingtalk_signature_matches_openssl() -> None:
    """HMAC-SHA256 over "timestamp\\nsecret", base64, URL-encoded: computed here by openssl."""
    secret, ts = "SEC0123456789abcdef", 1764474174576
    raw = subprocess.run(["openssl", "dgst", "-sha256", "-hmac", secret, "-binary"],
                         input=f"{ts}\n{secret}".encode(), capture_output=True,
                         check=True).stdout
    expected = base64.b64encode(raw).decode()
    assert sign(secret, ts) == expected.replace("+", "%2B").replace("/", "%2F").replace(
        "=", "%3D")
    url = signed_url("https://oapi.dingtalk.com/robot/send?access_token=t", secret, ts / 1000)
    query = dict(part.split("=", 1) for part in url.split("?", 1)[1].split("&"))
    from urllib.parse import unquote_plus
    assert dingtalk_signature_ok(secret, {k: unquote_plus(v) for k, v in query.items()},
                                 ts / 1000)
    assert signed_url("https://x/send?access_token=t", "", T0) == "https://x/send?access_token=t"


def test_dingtalk_rate_window_20_a_minute() -> None:
    window = RateWindow()
    for n in range(20):
        assert window.delay(T0 + n) == 0
        window.record(T0 + n)
    assert window.delay(T0 + 20) == pytest.approx(40)
    assert window.delay(T0 + 60) == 0  # the first one left the window


# ------------------------------------------------------------------ rendering


def test_one_alert_reads_as_one_line_with_host_and_severity() -> None:
    alert = policy.make("breaker_open", HOST, T0, "after 3 failed cycle(s)", process_id=7,
                        process_name="nginx", unit="nginx.service")
    assert render.title([alert]) == ("[CRITICAL] host01: breaker opened for nginx: not "
                                     "restarted until it resets")
    line = render.detail(alert)
    assert line.startswith("CRITICAL breaker_open: breaker opened for nginx")
    assert "after 3 failed cycle(s)" in line and "nginx.service" in line and HOST in line
    mixed = [alert, policy.make("refused", HOST, T0, process_id=9)]
    assert render.title(mixed) == "[CRITICAL] host01: 2 alerts (1 breaker_open, 1 refused)"
    many = [policy.make("refused", HOST, T0, process_id=n) for n in range(100)]
    body = render.text(many)
    assert "... and 70 more alert(s)" in body and len(body.splitlines()) < 40


# ------------------------------------------------------------------ the spool


def test_spool_survives_a_restart_and_drops_the_oldest_beyond_max_queued(
        tmp_path: Path) -> None:
    queue = SinkQueue("hook", tmp_path / "hook", max_queued=3)
    queue.load()
    messages = [Message((policy.make("refused", HOST, T0 + n, process_id=n),),
                        created=T0 + n) for n in range(4)]
    for m in messages[:3]:
        assert queue.put(m) == []
        queue.store(m)
    assert queue.put(messages[3]) == [messages[0]]  # the oldest, file and all
    queue.store(messages[3])
    assert len(list((tmp_path / "hook").glob("*.json"))) == 3
    (tmp_path / "hook" / "00000000000000000001-torn.json").write_text("{not json")
    again = SinkQueue("hook", tmp_path / "hook", max_queued=3)
    assert again.load() == 1  # the torn file is counted and deleted
    assert [m.id for m in again.items] == [m.id for m in messages[1:]]
    assert again.items[0].alerts == messages[1].alerts
    assert [m.id for m in again.expire(T0 + 2.5 + 100, max_age=100)] == [messages[1].id,
                                                                         messages[2].id]
    again.done(again.items[0])
    assert list((tmp_path / "hook").glob("*.json")) == []


def test_a_stop_keeps_what_is_grouped_or_queued(tmp_path: Path) -> None:
    """close() before the group window ends: the alerts are on disk, and the next start
    queues them again."""
    import asyncio

    async def main() -> None:
        alerts, clock = make_alerts(tmp_path, sinks=[sink("down")], retry_delay=10)
        alerts.sinks["down"].send = _refuse  # type: ignore[method-assign]
        task = asyncio.create_task(alerts.run())
        alerts.on_step(step("cycle_failed", 3))
        await asyncio.sleep(0)
        alerts.close()
        await task

    asyncio.run(main())
    files = list((tmp_path / "down").glob("*.json"))
    assert len(files) == 1
    data = json.loads(files[0].read_text())
    assert data["alerts"][0]["event"] == "cycle_failed"
    alerts, _ = make_alerts(tmp_path, sinks=[sink("down")])
    alerts.load()
    assert alerts.stats["down"].queued == 1


async def _refuse(message: Message, now: float) -> str:
    from reactor.errors import SinkUnavailable
    raise SinkUnavailable("connection refused")


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(("section", "problem"), [
    ("[alert.x]\ntype = pager\n", "[alert.x] type: must be one of alertmanager, webhook, "
                                  "dingtalk, smtp, got 'pager'"),
    ("[alert.x]\nurl = http://h/\n", "[alert.x] type: missing key"),
    ("[alert.x]\ntype = webhook\n", "[alert.x] url: required for type = webhook"),
    ("[alert.x]\ntype = smtp\nto = a@b\n", "[alert.x] host: required for type = smtp"),
    ("[alert.x]\ntype = smtp\nhost = h\n", "[alert.x] to: required for type = smtp"),
    ("[alert.x]\ntype = smtp\nhost = h\nto = a@b\ntls = ssl\n",
     "[alert.x] tls: must be one of starttls, implicit, none, got 'ssl'"),
    ("[alert.x]\ntype = webhook\nurl = http://h/\nmin_severity = fatal\n",
     "[alert.x] min_severity: must be one of critical, major, warning, info, got 'fatal'"),
    ("[alert.x]\ntype = webhook\nurl = http://h/\nsecret = s\n",
     "[alert.x] secret: not used by type = webhook (only by dingtalk)"),
    ("[alert.x]\ntype = smtp\nhost = h\nto = a@b\ntls = none\nuser = u\npassword = p\n",
     "[alert.x] password: never sent without TLS"),
    ("[alert.x]\ntype = webhook\nurl = ftp://h/\n", "[alert.x] url: must be an http://"),
    ("[alert.../x]\ntype = webhook\nurl = http://h/\n", "[alert.../x]: the name after"),
    ("[alerts]\ncooldown = -1\n", "[alerts] cooldown: must be from 0 to 604800 seconds, "
                                   "got -1"),
])
def test_every_bad_alert_key_is_named(section: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("[database]\nuser = x\n" + section)
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems


def test_a_longest_retry_delay_below_the_first_is_the_first() -> None:
    """Every value check-config accepts runs: retry_max_delay under retry_delay does not
    cut the first wait (Backoff needs its cap at or above its start)."""
    cfg = parse_config("[database]\nuser = x\n[alerts]\nretry_delay = 5\nretry_max_delay = 1\n")
    assert cfg.alerts.longest_retry_delay == 5


def test_sink_secrets_go_to_the_log_redactor() -> None:
    cfg = parse_config(
        "[database]\nuser = x\npassword = dbpass1\n"
        "[alert.ding]\ntype = dingtalk\nurl = https://oapi.dingtalk.com/robot/send?"
        "access_token=tok-abc-123\nsecret = SECsign99\n"
        "[alert.mail]\ntype = smtp\nhost = mail\nto = ops@example.com, dba@example.com\n"
        "user = reactor\npassword = mailpw77\n"
        "[alert.am]\ntype = alertmanager\nurl = https://u:ampw55@am.example.com/\n")
    assert set(cfg.secrets()) == {"dbpass1", "tok-abc-123", "SECsign99", "mailpw77", "ampw55"}
    mail = cfg.alerts.sinks[1]
    assert mail.port == 587 and mail.to == ("ops@example.com", "dba@example.com")
    assert "mailpw77" not in repr(cfg) and "tok-abc-123" not in repr(cfg)


def test_an_alert_round_trips_through_json() -> None:
    alert = policy.make("cycle_failed", HOST, T0, "x", process_id=1, process_name="a",
                        unit="a.service").resolve(T0 + 1, "restarted")
    assert Alert.from_json(json.loads(json.dumps(alert.as_json()))) == alert


def test_alertmanager_gets_firing_alerts_again_until_max_age() -> None:
    """Alertmanager expects a client to re-send what still fires (every RESEND s); an alert
    firing longer than max_age (its recovery will never come) is forgotten."""
    alerts, clock = make_alerts(sinks=[sink("am", kind="alertmanager"), sink("hook")],
                                max_age=600)
    alerts.on_step(step("breaker_open", 7))
    alerts.on_step(step("refused", 8))  # a one-off: never re-sent
    alerts.tick(T0 + 5)
    for name in ("am", "hook"):
        [first] = sent(alerts, name)
        assert not first.refresh and len(first.alerts) == 2
        alerts.queues[name].done(first)  # delivered
    alerts.tick(T0 + 60)
    [again] = sent(alerts, "am")
    assert again.refresh and [a.key for a in again.alerts] == ["breaker_open:7"]
    assert sent(alerts, "hook") == []
    alerts.queues["am"].done(again)
    alerts.tick(T0 + 700)  # older than max_age
    assert sent(alerts, "am") == [] and alerts.firing == {}
