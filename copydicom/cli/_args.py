"""Argument types shared by the one-shot commands (durations written ``30s``, ``5m``, ``2h``, ``24h``)."""

from __future__ import annotations

import argparse
import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def duration(text: str) -> float:
    """Seconds of a duration written ``30s``, ``5m``, ``2h`` or ``1d`` (an ``argparse`` type).

    Raises
    ------
    argparse.ArgumentTypeError
        Not a number followed by one of ``s``, ``m``, ``h``, ``d`` (exit status 2).
    """
    match = _DURATION.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration like 30s, 5m, 2h or 1d")
    return float(match.group(1)) * _UNIT[match.group(2)]


def add_index_timeout(parser: argparse.ArgumentParser) -> None:
    """``--index-timeout``: how long a one-shot command waits for its index spool to drain."""
    parser.add_argument(
        "--index-timeout", type=duration, default=30.0, metavar="DURATION",
        help="wait this long for the index to take the queued documents (default 30s); what is still "
        "pending then is counted as failed (exit 1), kept in the spool and sent by the next run",
    )
