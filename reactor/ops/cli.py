"""The `reactor` command: subcommands, and the mapping of errors to exit codes.

Exit status: 0 success / clean stop; 1 invalid configuration; 2 usage error; 3 database
unavailable or refused at start; 4 server unsuitable for mode=binlog; 5 D-Bus unavailable
at start; 6 a command failed (e.g. `alarm set` of an unknown process); 70 internal error
(an unexpected exception: a bug).
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import json
import os
import signal
import sys
from collections.abc import Callable, Sequence

from loguru import logger

from reactor import __version__
from reactor.config import DEFAULT_CONFIG_PATH, Config, load_config, permission_warnings
from reactor.errors import (
    BusUnavailable,
    ConfigError,
    DatabaseRefused,
    DatabaseUnavailable,
    NotFound,
    ReactorError,
    ServerNotSuitable,
)
from reactor.ops import logs
from reactor.text import one_line

EXIT_OK, EXIT_CONFIG, EXIT_USAGE, EXIT_DATABASE, EXIT_SERVER, EXIT_BUS, EXIT_FAILED = range(7)
EXIT_INTERNAL = 70  # EX_SOFTWARE: an unexpected exception


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("REACTOR_CONFIG") or DEFAULT_CONFIG_PATH)


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


# ------------------------------------------------------------------ check-config


def cmd_check_config(args: argparse.Namespace) -> int:
    path = _config_path(args)
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"{path}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    for warning in permission_warnings(path, config):
        print(f"warning: {warning}", file=sys.stderr)
    print(f"{path}: OK ({len(config.processes)} process section(s), "
          f"{len(config.alerts.sinks)} alert sink(s))")
    return EXIT_OK


# ------------------------------------------------------------------ watch


def install_stop_handlers(stop: Callable[[bool], None],
                          reload: Callable[[], object] | None = None) -> Callable[[], None]:
    """SIGINT/SIGTERM call stop(False): an orderly stop. A second SIGINT calls stop(True):
    still orderly, but without waiting for cycles in flight; a third exits at once. SIGHUP
    calls reload() when given. Returns an undo."""
    loop = asyncio.get_running_loop()
    hits = {"n": 0}

    def handler(signum: int) -> None:
        hits["n"] += 1
        if hits["n"] > 1 and signum == signal.SIGINT:
            if hits["n"] > 2:
                logger.warning("third interrupt: exiting now, without saving anything more")
                os._exit(130)
            logger.warning("second interrupt: stopping without waiting for cycles in flight "
                           "(audit rows and the checkpoint are still written)")
            stop(True)
            return
        logger.info("received {}, stopping", signal.Signals(signum).name)
        stop(False)

    signals = [signal.SIGINT, signal.SIGTERM]
    for sig in signals:
        loop.add_signal_handler(sig, handler, sig)
    if reload is not None:
        signals.append(signal.SIGHUP)
        loop.add_signal_handler(signal.SIGHUP, reload)

    def undo() -> None:
        for sig in signals:
            loop.remove_signal_handler(sig)

    return undo


async def _watch(config: Config, args: argparse.Namespace) -> int:
    from reactor.events import Alarm
    from reactor.sources.intake import Intake
    from reactor.sources.monitor import Monitor
    from reactor.storage.database import Database
    from reactor.storage.statefile import StateFile

    out = sys.stdout
    reader_gone = False
    lines: list[str] = []  # written out once per transaction (a 10,000-row UPDATE: one write)

    def emit(alarm: Alarm) -> None:
        if reader_gone:
            return
        if not lines:  # a sweep's or a lookup's alarm too is out by the end of this turn
            asyncio.get_running_loop().call_soon(flush)
        lines.append(json.dumps(alarm.as_json()) + "\n")
        if len(lines) >= 1000:
            flush()

    def flush() -> None:
        nonlocal reader_gone
        if reader_gone or not lines:
            lines.clear()
            return
        try:
            out.write("".join(lines))
            lines.clear()
            out.flush()
        except OSError as exc:  # BrokenPipeError: `reactor watch | head -1` has its line
            if exc.errno != errno.EPIPE:
                raise
            reader_gone = True
            # what is still buffered goes nowhere, and the flush at exit does not fail
            # (https://docs.python.org/3/library/signal.html#note-on-sigpipe)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, out.fileno())
            os.close(devnull)
            logger.info("stdout closed by its reader: stopping")
            monitor.stop()

    database = Database(config.database, workers=2)
    intake = Intake(emit, database)
    intake.on_emitted = flush  # printed before its position may be checkpointed
    state = StateFile(args.state_file, key="--state-file")
    state.acquire()  # a checkpoint has one writer
    monitor = Monitor(config, database, state, intake)
    try:
        mode = await monitor.choose_mode()
        undo = install_stop_handlers(lambda urgent: monitor.stop())
        task = asyncio.create_task(monitor.run())
        ready = asyncio.create_task(monitor.ready.wait())
        await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
        if monitor.ready.is_set():
            logger.info("watching for alarms: mode={} position={}", mode,
                        monitor.position or "-")
        try:
            await task
        finally:
            ready.cancel()
            undo()
        logger.info("stopped")
        return EXIT_OK
    finally:
        database.close()
        state.close()


def cmd_watch(args: argparse.Namespace) -> int:
    config = _load(args)
    base = config.binlog.server_id or config.database.server_id
    server_id = args.server_id or base + 1
    from reactor.config import with_overrides

    config = with_overrides(config, database={"server_id": server_id},
                            binlog={"server_id": server_id})
    logs.setup(config.logging, secrets=[config.database.password], to_file=False)
    return asyncio.run(_watch(config, args))


# ------------------------------------------------------------------ run


async def _run(config: Config) -> int:
    from reactor.config import LoggingConfig
    from reactor.daemon import Daemon

    def relog(cfg: LoggingConfig) -> None:
        logs.setup(cfg, secrets=config.secrets())  # the sinks' secrets too: they stay

    daemon = Daemon(config, relog=relog)
    undo = install_stop_handlers(lambda urgent: daemon.stop(urgent=urgent), daemon.reload)
    try:
        return await daemon.serve()
    finally:
        undo()


def cmd_run(args: argparse.Namespace) -> int:
    path = _config_path(args)
    config = _load(args)
    logs.setup(config.logging, secrets=config.secrets())
    for warning in permission_warnings(path, config):
        logger.warning(warning)
    return asyncio.run(_run(config))


# ------------------------------------------------------------------ sweep


async def _sweep_once(config: Config) -> int:
    from reactor.daemon import Daemon

    failed = await Daemon(config).sweep_once()
    return EXIT_OK if failed == 0 else EXIT_FAILED


def cmd_sweep(args: argparse.Namespace) -> int:
    config = _load(args)
    if args.dry_run:
        from reactor.ops.table import table
        from reactor.ownership import Ownership
        from reactor.storage.database import connect, mapped
        from reactor.storage.queries import fetch_alarmed, has_host_column

        with connect(config.database) as conn, conn.cursor() as cur, mapped("sweep"):
            owned = Ownership(config.monitor.host, config.monitor.take_unassigned,
                              has_host_column(cur))
            rows = fetch_alarmed(cur, owned)
        table(["ID", "NAME", "UNIT"], [
            [str(pid), name or "(unknown)", config.unit_for(name) if name else "-"]
            for pid, name in rows], sys.stdout)
        return EXIT_OK
    logs.setup(config.logging, secrets=config.secrets(), to_file=False)
    return asyncio.run(_sweep_once(config))


# ------------------------------------------------------------------ status, alarm, menu


def cmd_status(args: argparse.Namespace) -> int:
    from reactor.ops import status

    status.print_status(_load(args), args.json, host=args.host)
    return EXIT_OK


def cmd_fleet(args: argparse.Namespace) -> int:
    from reactor.ops import fleet

    fleet.print_fleet(_load(args), args.json, args.stale)
    return EXIT_OK


def cmd_alarm(args: argparse.Namespace) -> int:
    from reactor.ops import alarms

    config = _load(args)
    if args.action == "list":
        alarms.print_processes(config, host=args.host)
        return EXIT_OK
    if args.host is not None and not args.all:
        print(f"reactor alarm {args.action}: --host goes with --all", file=sys.stderr)
        return EXIT_USAGE
    value = 1 if args.action == "set" else 0
    if args.all == bool(args.process):
        print(f"reactor alarm {args.action}: give a process id or name, or --all",
              file=sys.stderr)
        return EXIT_USAGE
    try:
        changed = alarms.set_alarm(config, None if args.all else args.process, value,
                                   host=args.host)
    except NotFound as exc:
        print(f"reactor: {exc}", file=sys.stderr)
        return EXIT_FAILED
    verb = "set" if value else "reset"
    if not changed:
        who = ("every process is" if value else "no process is") if args.all else \
            f"{args.process} is {'already' if value else 'not'}"
        print(f"nothing to {verb}: {who} in alarm")
    for pid, name in changed:
        print(f"alarm {verb}: {one_line(name)} (id {pid})")
    return EXIT_OK


def cmd_alert(args: argparse.Namespace) -> int:
    """`reactor alert test [--sink NAME]`: a test alert to every sink (or one), directly."""
    import time

    from reactor.alerts.dispatcher import HOST
    from reactor.alerts.sinks import build, send_test

    config = _load(args)
    logs.setup(config.logging, secrets=config.secrets(), to_file=False)
    sinks = [s for s in config.alerts.sinks if args.sink in (None, s.name)]
    if not sinks:
        have = ", ".join(s.name for s in config.alerts.sinks) or "none"
        what = f"no [alert.{args.sink}] section" if args.sink else "no [alert.NAME] section"
        print(f"reactor alert test: {what} in {_config_path(args)} (sinks: {have})",
              file=sys.stderr)
        return EXIT_USAGE if args.sink else EXIT_FAILED
    built = [build(s, config.alerts.timeout) for s in sinks]
    results = asyncio.run(send_test(built, HOST, time.time()))
    for sink, answer, ok in results:
        print(f"{sink}: {'ok' if ok else 'FAILED'}: {answer}")
    return EXIT_OK if all(ok for _, _, ok in results) else EXIT_FAILED


def cmd_menu(args: argparse.Namespace) -> int:
    from reactor.ops import menu

    return menu.run(_load(args))


# ------------------------------------------------------------------ main


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reactor",
        description="Restart a process's systemd unit the moment its alarm is set in the database.",
    )
    parser.add_argument("--version", action="version", version=f"reactor {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, fn: Callable[[argparse.Namespace], int],
            help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.add_argument("--config", "-c", metavar="PATH",
                       help=f"config file (default: $REACTOR_CONFIG or {DEFAULT_CONFIG_PATH})")
        p.set_defaults(func=fn)
        return p

    add("run", cmd_run, "the daemon: restart a process's unit when its alarm is set")
    add("check-config", cmd_check_config, "validate a config file; one line per problem")
    st = add("status", cmd_status, "a table per process: alarm, breaker, last action, unit state")
    st.add_argument("--json", action="store_true", help="one JSON object per process")
    st.add_argument("--host", metavar="NAME",
                    help="only the processes of this host (PROCESE.host; '' = no host)")
    al = add("alarm", cmd_alarm, "list, set or reset alarms (the test menu as subcommands)")
    al.add_argument("action", choices=["list", "set", "reset"])
    al.add_argument("process", nargs="?", help="process id or name (set/reset)")
    al.add_argument("--all", action="store_true", help="every process (set/reset)")
    al.add_argument("--host", metavar="NAME",
                    help="only the processes of this host (list; set/reset with --all)")
    fl = add("fleet", cmd_fleet, "every reactor of the database, those not seen for a while, "
                                 "and alarms waiting on hosts without a live reactor")
    fl.add_argument("--json", action="store_true", help="one JSON document")
    fl.add_argument("--stale", type=float, metavar="SECONDS",
                    help="not seen for this long = not live (default: 3 x [monitor] "
                         "fleet_interval, at least 30)")
    add("menu", cmd_menu, "interactive test menu: display, set one, set all, reset all")
    at = add("alert", cmd_alert, "send a test alert to every alert sink (or one) and show "
                                 "what each answered")
    at.add_argument("action", choices=["test"])
    at.add_argument("--sink", metavar="NAME", help="only the sink of [alert.NAME]")
    sw = add("sweep", cmd_sweep, "one reconciliation sweep: handle every alarm set now, then exit")
    sw.add_argument("--once", action="store_true", required=True,
                    help="run one sweep and exit (the only mode; the daemon sweeps by itself)")
    sw.add_argument("--dry-run", action="store_true",
                    help="only list the alarms a sweep would handle")
    w = add("watch", cmd_watch, "print one JSON line per alarm as it is detected (acts on nothing)")
    w.add_argument("--state-file", metavar="PATH",
                   help="checkpoint the binlog position here and resume from it "
                        "(default: start at the current position, in memory only)")
    w.add_argument("--server-id", type=int, metavar="N",
                   help="binlog replica id (default: [database] server_id + 1, so that "
                        "watch never collides with a running daemon)")
    return parser


def _first_error(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first of the reactor's own errors inside a TaskGroup's exception group."""
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            exc = _first_error(exc)
        if isinstance(exc, ReactorError):
            return exc
    return group.exceptions[0]


# The exit status of each of the reactor's own errors, and how its line on stderr starts;
# the first class that matches wins (subclasses come before their bases).
EXIT_CODES: tuple[tuple[type[ReactorError], int, str], ...] = (
    (ConfigError, EXIT_CONFIG, ""),
    (ServerNotSuitable, EXIT_SERVER, ""),
    (DatabaseUnavailable, EXIT_DATABASE, "database unavailable: "),
    (DatabaseRefused, EXIT_DATABASE, "database refused: "),
    (BusUnavailable, EXIT_BUS, "D-Bus unavailable: "),
    (ReactorError, EXIT_FAILED, ""),
)


def exit_code(exc: ReactorError) -> tuple[int, str]:
    """(exit status, prefix of the stderr line) for one of the reactor's own errors."""
    for cls, code, prefix in EXIT_CODES:
        if isinstance(exc, cls):
            return code, prefix
    raise AssertionError("ReactorError is the last row of EXIT_CODES")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        try:
            return int(args.func(args))
        except BaseExceptionGroup as group:
            raise _first_error(group) from group
    except ConfigError as exc:
        # also a log_file or state_file the config names but that cannot be used (exit 1:
        # the unit does not restart-loop on it); a problem naming a command-line option
        # (--state-file) is not the config file's
        path = _config_path(args)
        for problem in exc.problems:
            where = "" if problem.startswith("--") else f"{path}: "
            print(f"reactor: {where}{problem}", file=sys.stderr)
        return EXIT_CONFIG
    except ReactorError as exc:
        code, prefix = exit_code(exc)
        print(f"reactor: {prefix}{exc}", file=sys.stderr)
        return code
    except KeyboardInterrupt:
        return 130
    except Exception:  # a bug: say so, and do not look like a config error (exit 1)
        import traceback

        traceback.print_exc()
        print("reactor: internal error (a bug; the traceback above helps to report it)",
              file=sys.stderr)
        return EXIT_INTERNAL
