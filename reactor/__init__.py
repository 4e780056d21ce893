"""reactor: restarts a process's systemd unit the moment its alarm is set in the database."""

__version__ = "0.1.0"
