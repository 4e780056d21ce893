"""Alerts: tell people when a process cannot be fixed, or reactor itself is degraded.

    events.Observers ─> dispatcher.Alerts (an Observer)
        policy.py     step / notice -> alert (severity, key) or resolve        pure
        noise.py      cooldown per event and process, grouping per sink        pure
        render.py     title and text of a message                              pure
        spool.py      a sink's queue, in memory and on disk
        delivery.py   a sink's courier: retries, backoff, max_age
        sinks/        alertmanager, webhook, dingtalk, smtp

Imports config, errors, events, retry and storage.statefile; nothing in sources, actions
or storage imports it.
"""
