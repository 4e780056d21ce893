"""Where alarms come from: the binlog stream, the sweep and the poller, the start-up check
of the server that picks between them, and the intake that turns row changes into alarms,
each delivered once."""
