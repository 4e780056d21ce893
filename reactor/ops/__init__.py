"""The operator's surface: the `reactor` command line, status, alarms, the test menu and
the logging setup."""
