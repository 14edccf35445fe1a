"""``copydicom console add-user`` and ``copydicom console serve``."""

from __future__ import annotations

import argparse
import getpass
import signal
import sys
import threading
from typing import Any

from copydicom.config import load_config
from copydicom.errors import ConfigError


def _console_config(args: argparse.Namespace) -> Any:
    config = load_config(args.config)
    if getattr(config, "console", None) is None:
        raise ConfigError(f"{args.config}: no console: section (console: {{listen: ..., users_file: ...}})")
    return config


def _read_password() -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        return line[:-1] if line.endswith("\n") else line
    first = getpass.getpass("password: ")
    if first != getpass.getpass("again: "):
        raise ConfigError("the two passwords differ")
    return first


def cmd_add_user(args: argparse.Namespace) -> int:
    from copydicom.console import add_user

    config = _console_config(args)
    add_user(config.console.users_file, args.name, _read_password(), role=args.role, phi=args.phi)
    print(f"user {args.name} ({args.role}{', phi' if args.phi else ''}) written to {config.console.users_file}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The console alone, over the state database (routes show as stopped unless the daemon runs them)."""
    from copydicom.console import ConsoleServer, JobManager, create_app
    from copydicom.console._wiring import make_backend, make_upload_runner
    from copydicom.ledger import Ledger

    config = _console_config(args)
    ledger = Ledger(config.store_location)  # the SQLite file or the PostgreSQL state
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    app = create_app(config.console, make_backend(config, ledger),
                     jobs=JobManager(make_upload_runner(config, ledger)), work_dir=config.state.parent)
    server = ConsoleServer(config.console, app)
    server.start()
    print(f"console on {'https' if config.console.tls else 'http'}://{config.console.listen}", flush=True)
    try:
        stop.wait()
    finally:
        server.stop()
        ledger.close()
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``console``."""
    p = subparsers.add_parser("console", help="the operator's web console: users, or serve it alone")
    sub = p.add_subparsers(dest="console_command", metavar="ACTION")
    sub.required = True
    a = sub.add_parser("add-user", help="add or replace a console user (password from stdin when not a terminal)")
    a.add_argument("name")
    a.add_argument("--role", choices=("viewer", "operator"), required=True)
    a.add_argument("--phi", action="store_true", help="may reveal patient-identifying values (audited)")
    a.add_argument("--config", "-c", required=True)
    a.set_defaults(func=cmd_add_user)
    s = sub.add_parser("serve", help="serve the console alone (the daemon serves it when console: is configured)")
    s.add_argument("--config", "-c", required=True)
    s.set_defaults(func=cmd_serve)
