"""The ``copydicom`` command line.

Each command group lives in its own module under ``copydicom/cli/`` and
exposes ``register(subparsers)``; :data:`COMMAND_MODULES` lists them.
Exit status: 0 success, 1 something was quarantined or failed, 2 usage or
configuration error.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from copydicom import __version__
from copydicom.errors import ConfigError, CopyDicomError

#: Modules that add sub-commands; each has ``register(subparsers) -> None``.
COMMAND_MODULES: tuple[str, ...] = (
    "copydicom.cli.replicate_cmds",
    "copydicom.cli.demo_cmds",
    "copydicom.cli.dose_cmds",
    "copydicom.cli.deid_cmds",
    "copydicom.cli.s3_cmds",
    "copydicom.cli.index_cmds",
    "copydicom.cli.conditional_cmds",
    "copydicom.cli.dimse_cmds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="copydicom",
        description="Replicate Orthanc DICOM archives, de-identify in flight, index tags and dose.",
    )
    parser.add_argument("--version", action="version", version=f"copydicom {__version__}")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log detail")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from copydicom.logsetup import configure_logging

    configure_logging(json_lines=args.log_json, verbose=args.verbose)
    try:
        status: int = args.func(args)
    except ConfigError as exc:
        print(f"copydicom: configuration error: {exc}", file=sys.stderr)
        return 2
    except CopyDicomError as exc:
        print(f"copydicom: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
