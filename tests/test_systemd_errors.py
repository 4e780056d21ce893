"""D-Bus error replies map to the reactor's own errors (the adapter boundary)."""

from __future__ import annotations

import pytest
from dbus_fast import Message, MessageType

from reactor.errors import BusUnavailable, CallTimeout, NoSuchUnit, UnitOperationFailed
from reactor.systemd import map_error, unit_path


def error(name: str, text: str = "boom") -> Message:
    return Message(message_type=MessageType.ERROR, error_name=name, reply_serial=1,
                   signature="s", body=[text])


@pytest.mark.parametrize(("name", "expected"), [
    ("org.freedesktop.systemd1.NoSuchUnit", NoSuchUnit),
    ("org.freedesktop.systemd1.LoadFailed", NoSuchUnit),
    ("org.freedesktop.systemd1.UnitMasked", UnitOperationFailed),
    ("org.freedesktop.DBus.Error.AccessDenied", UnitOperationFailed),
    ("org.freedesktop.DBus.Error.InteractiveAuthorizationRequired", UnitOperationFailed),
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
