"""D-Bus error replies map to the reactor's own errors (the adapter boundary)."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest
from dbus_fast import Message, MessageType

from reactor.actions.systemd import Systemd, map_error, unit_path
from reactor.config import SystemdConfig
from reactor.errors import (
    AccessDenied,
    BusUnavailable,
    CallTimeout,
    NoSuchUnit,
    UnitOperationFailed,
)


def error(name: str, text: str = "boom") -> Message:
    return Message(message_type=MessageType.ERROR, error_name=name, reply_serial=1,
                   signature="s", body=[text])


@pytest.mark.parametrize(("name", "expected"), [
    ("org.freedesktop.systemd1.NoSuchUnit", NoSuchUnit),
    # only NoSuchUnit says for certain that the unit does not exist (restart.py relies on it)
    ("org.freedesktop.systemd1.LoadFailed", UnitOperationFailed),
    ("org.freedesktop.systemd1.UnitMasked", UnitOperationFailed),
    ("org.freedesktop.DBus.Error.AccessDenied", AccessDenied),
    ("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", AccessDenied),
    ("org.freedesktop.DBus.Error.NoReply", CallTimeout),
    ("org.freedesktop.DBus.Error.Timeout", CallTimeout),
    ("org.freedesktop.DBus.Error.Disconnected", BusUnavailable),
    ("org.freedesktop.DBus.Error.ServiceUnknown", BusUnavailable),
    ("org.example.Anything", UnitOperationFailed),
])
def test_error_mapping(name: str, expected: type[Exception]) -> None:
    exc = map_error(error(name, "text from systemd"), "RestartUnit")
    assert type(exc) is expected
    assert "RestartUnit: text from systemd" in str(exc) and name in str(exc)


def test_unit_path_escaping() -> None:
    assert unit_path("nginx.service") == "/org/freedesktop/systemd1/unit/nginx_2eservice"
    assert unit_path("a-b@1.service") == "/org/freedesktop/systemd1/unit/a_2db_401_2eservice"


def test_a_bus_without_systemd_is_unavailable_and_not_half_connected(tmp_path: Path) -> None:
    """A D-Bus where systemd does not answer: AddMatch works, Subscribe fails. connect()
    raises BusUnavailable and leaves no half-set-up connection behind (regression: the
    connection stayed 'connected' without a subscription, every job then timed out)."""
    address = f"unix:path={tmp_path}/bus"
    config = tmp_path / "bus.conf"  # no service directories: nothing may be activated
    config.write_text(
        '<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" '
        '"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">\n'
        f"<busconfig><type>session</type><listen>{address}</listen>"
        '<policy context="default"><allow send_destination="*" eavesdrop="true"/>'
        '<allow eavesdrop="true"/><allow own="*"/></policy>'
        "</busconfig>\n")
    daemon = subprocess.Popen(["dbus-daemon", f"--config-file={config}", "--nofork",
                               "--nopidfile"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            if (tmp_path / "bus").exists():
                break
            time.sleep(0.05)

        async def scenario() -> None:
            sd = Systemd(SystemdConfig(bus=address, call_timeout=2, job_timeout=2))
            with pytest.raises(BusUnavailable, match="systemd does not answer"):
                await sd.connect()
            assert not sd.connected
            with pytest.raises(BusUnavailable):
                await sd.restart("x.service")
            await sd.close()

        asyncio.run(scenario())
    finally:
        daemon.kill()
        daemon.wait()
