"""``copydicom checkpoint``: show or re-base a route's checkpoint (the manual way out of a feed reset).

After a source's database was rebuilt, the route holds (see :mod:`copydicom.feedcheck`)
until its checkpoint is re-based.  The convergence issue's reconcile does that by
itself; until then, or when an operator knows better, ``copydicom checkpoint --route R
--rebase 0`` re-reads the whole new feed (instances already at the destination are
recognised and not sent again) and clears the reset.  Stop the daemon first: the
command refuses while a process holds the route's lock.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.model import FeedPosition


def cmd_checkpoint(args: argparse.Namespace) -> int:
    from copydicom.cli.replicate_cmds import _load, _state_location

    config = _load(args)
    state = _state_location(args, config)
    if isinstance(state, Path) and not state.exists():
        raise ConfigError(f"no state database at {state}")
    ledger = Ledger(state)
    try:
        position = ledger.position(args.route)
        reset = ledger.feed_resets().get(args.route)
        if args.rebase is None:
            print(f"route {args.route}: checkpoint {None if position is None else position.seq}"
                  + (f"; FEED RESET: {reset.reason}" if reset else ""))
            return 0
        if args.rebase < 0:
            raise ConfigError("--rebase: a sequence number >= 0")
        with ledger.store.lock_route(args.route):  # refused while a daemon follows the route
            ledger.store.rebase_checkpoint(args.route, FeedPosition(args.rebase))
        print(f"route {args.route}: checkpoint re-based from {None if position is None else position.seq} "
              f"to {args.rebase}" + ("; feed reset cleared" if reset else ""))
        return 0
    finally:
        ledger.close()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``checkpoint`` command."""
    p = subparsers.add_parser("checkpoint", help="show or re-base a route's checkpoint (after a feed reset)")
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database (default: the config's)")
    p.add_argument("--route", required=True, help="route name")
    p.add_argument("--rebase", type=int, metavar="SEQ",
                   help="set the checkpoint to SEQ, even backwards, and clear a detected feed reset "
                        "(0 after a rebuilt source: everything is looked at again, nothing present is re-sent)")
    p.set_defaults(func=cmd_checkpoint)
