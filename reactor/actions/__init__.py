"""What is done about an alarm: the pipeline (one cycle per alarm), the circuit breaker,
unit resolution, the restart strategies, health checks, commands, and systemd over D-Bus."""
