"""Metrics: a Prometheus registry fed by the observers (registry.py), gauges read from the
daemon's snapshot at scrape time (collector.py, snapshot.py), the HTTP listener for
/metrics, /status.json and /healthz (server.py), the node_exporter textfile (textfile.py),
the status document shared with `reactor status` (status.py), and the daemon's handle on
all of it (service.py)."""
