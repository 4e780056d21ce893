"""Throwaway parts for the demo, the tests and the benchmarks: a MariaDB server in a temporary
directory and a real systemd user manager in its own namespaces. Not used by the daemon."""


class LabUnavailable(RuntimeError):
    """This machine cannot provide the part (not installed, not root, no cgroups ...)."""
