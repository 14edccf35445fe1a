"""DIMSE commands: ``listen`` (C-STORE receiver routes alone) and ``echo`` (C-ECHO)."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from typing import Any

from copydicom.errors import ConfigError


def cmd_echo(args: argparse.Namespace) -> int:
    """C-ECHO a DICOM node: ``echo=ok status=0x0000 seconds=0.01``; exit 1 if it does not answer."""
    from copydicom.endpoints.dimse import DimseConfig
    from copydicom.endpoints.dimse.scu import echo
    from copydicom.errors import RetryableError

    url = args.url
    if args.calling:
        url += ("&" if "?" in url else "?") + f"calling={args.calling}"
    if args.timeout:
        url += ("&" if "?" in url else "?") + f"timeout={args.timeout}"
    cfg = DimseConfig.from_url(url)
    try:
        status, seconds = echo(cfg)
    except RetryableError as exc:
        print(f"echo=failed reason={exc}", file=sys.stderr)
        print(f"echo=failed peer={cfg.display_url}")
        return 1
    ok = status == 0
    print(f"echo={'ok' if ok else 'failed'} peer={cfg.display_url} status=0x{status:04X} seconds={seconds:.3f}")
    return 0 if ok else 1


def listener_routes(config: Any) -> list[Any]:
    """The configuration's routes whose source is a ``dimse_listener``."""
    return [r for r in config.routes if config.endpoint_types[r.source] == "dimse_listener"]


def cmd_listen(args: argparse.Namespace) -> int:
    """Run the configuration's listener routes until SIGTERM/SIGINT."""
    from copydicom.config import load_config
    from copydicom.endpoints.dimse.listener import listener_status
    from copydicom.endpoints.dimse.loop import ListenLoop

    config = load_config(args.config)
    if config.cluster is not None:  # cluster mode: a staged listener's route stores into its staging Orthanc
        from copydicom.cluster.staging import expand

        config = expand(config)
    if args.status:
        listeners = [n for n, t in config.endpoint_types.items() if t == "dimse_listener"]
        out: dict[str, Any] = {n: listener_status(config.endpoints[n]) for n in listeners}
        if args.json:
            print(json.dumps(out, indent=2))
        else:
            for name, st in out.items():
                oldest = st["spool_oldest_seconds"]
                print(f"{name}: spool_depth={st['spool_depth']} oldest={'-' if oldest is None else f'{oldest:.0f}s'}")
        return 0
    routes = listener_routes(config)
    if not routes:
        raise ConfigError("routes: no route has a dimse_listener source")
    done = threading.Event()
    fatal: list[BaseException] = []

    def on_fatal(exc: BaseException) -> None:
        fatal.append(exc)
        done.set()

    loop = ListenLoop(config, routes, key_file=args.key_file, on_fatal=on_fatal)

    def request_stop(*_: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        loop.start()
    except BaseException:
        loop.stop()
        loop.close()
        raise
    for route, runtime in loop.runtimes:
        listener = runtime.source.listener
        print(f"listening: route={route.name} ae={listener.config.ae_title} "
              f"address={listener.config.host}:{listener.port}", flush=True)
    from copydicom.daemon import sd_notify

    sd_notify("READY=1")
    try:
        while not done.wait(30):
            sd_notify("WATCHDOG=1")
    finally:
        sd_notify("STOPPING=1")
        loop.stop()
        loop.close()
    if fatal:
        raise fatal[0]  # the CLI turns it into the exit status (2 for a configuration error)
    return 1 if loop.failures else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``listen`` and ``echo``."""
    p = subparsers.add_parser("listen", help="receive C-STORE pushes and run the listener routes of a config")
    p.add_argument("--config", required=True, help="the YAML configuration")
    p.add_argument("--key-file", help="de-identification key (for routes with a profile)")
    p.add_argument("--status", action="store_true", help="print each listener's spool depth and oldest entry, then exit")
    p.add_argument("--json", action="store_true", help="with --status: JSON")
    p.set_defaults(func=cmd_listen)
    p = subparsers.add_parser("echo", help="C-ECHO a DICOM node (dicom://AET@host:port)")
    p.add_argument("url", help="dicom://CALLED_AET@host:port[?calling=COPYDICOM]")
    p.add_argument("--calling", help="our AE title (default COPYDICOM)")
    p.add_argument("--timeout", help="association and answer timeout (default 30s)")
    p.set_defaults(func=cmd_echo)
