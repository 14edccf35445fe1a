"""The ``copydicom`` command line.

Each command group lives in its own module under ``copydicom/cli/`` and
exposes ``register(subparsers)``; :func:`build_parser` imports them (static
imports, inside the function because some import :func:`main`).
Exit status: 0 success, 1 something was quarantined or failed, 2 usage or
configuration error, 141 the reader of standard output went away
(``copydicom dose ... | head``): the command stops quietly, without a
traceback, with the status a shell gives coreutils killed by SIGPIPE
(128 + 13), so ``set -o pipefail`` scripts see the cut-short output the same way.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Sequence

from copydicom import __version__
from copydicom.errors import ConfigError, CopyDicomError

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
    from copydicom.cli import (
        conditional_cmds,
        deid_cmds,
        demo_cmds,
        dimse_cmds,
        dose_cmds,
        endpoints_cmds,
        console_cmds,
        index_cmds,
        reconcile_cmds,
        replicate_cmds,
        s3_cmds,
        state_cmds,
    )

    for module in (replicate_cmds, demo_cmds, dose_cmds, deid_cmds, s3_cmds, index_cmds, conditional_cmds,
                   endpoints_cmds, state_cmds, reconcile_cmds, console_cmds, dimse_cmds):
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    from copydicom.logsetup import configure_logging

    configure_logging(json_lines=args.log_json, verbose=args.verbose)
    try:
        status: int = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not in the interpreter's exit
    except BrokenPipeError:
        return _reader_went_away()
    except ConfigError as exc:
        print(f"copydicom: configuration error: {exc}", file=sys.stderr)
        return 2
    except CopyDicomError as exc:
        print(f"copydicom: {type(exc).__name__}: {exc}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        return 130
    return status


#: Exit status when standard output's reader closed the pipe (128 + SIGPIPE, as shells report coreutils).
EXIT_BROKEN_PIPE = 141


def _reader_went_away() -> int:
    """Stop writing to a closed pipe, quietly (Python docs, "Note on SIGPIPE")."""
    try:
        # Point stdout at /dev/null: the interpreter's final flush would raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, io.UnsupportedOperation):  # stdout is not a file (tests capture it)
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
