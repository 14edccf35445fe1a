"""``copydicom demo``: the main job on local defaults, with its own Orthanc servers.

Starts two private Orthanc servers on free loopback ports (temporary storage,
stopped by PID at the end), loads a generated sample of synthetic CT
instances into the first, replicates it to the second, runs it again to show
that nothing is sent twice, and prints the summaries.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from copydicom.cli import main as cli_main
from copydicom.errors import ConfigError


def cmd_demo(args: argparse.Namespace) -> int:
    try:  # the launchers and the sample generator live with the tests, not in the installed package
        from tests.support.orthanc import OrthancServer
        from tests.support.synthetic import ct_study_files, upload_all
    except ImportError:
        raise ConfigError("the demo runs from a source checkout: bash scripts/demo.sh") from None

    work = Path(tempfile.mkdtemp(prefix="copydicom-demo-"))
    source = OrthancServer("DEMO_SOURCE", workdir=work / "source")
    dest = OrthancServer("DEMO_DEST", workdir=work / "dest")
    try:
        print("starting two Orthanc servers on loopback...", flush=True)
        source.start()
        dest.start()
        print(f"  source      {source.url}\n  destination {dest.url}")
        print(f"loading {args.instances} synthetic CT instances (fake patients) into the source...", flush=True)
        started = time.monotonic()
        files = ct_study_files(args.instances, patients=max(1, args.instances // 100), rows=256, cols=256)
        upload_all(source.upload, files)
        print(f"  loaded in {time.monotonic() - started:.1f} s")
        state = work / "state" / "state.db"
        common = ["replicate", "--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
                  "--state", str(state), "--workers", str(args.workers)]
        print("\nreplicating (copydicom replicate)...", flush=True)
        status = cli_main(common)
        print("\nsecond run: everything is already there, nothing is sent...", flush=True)
        status = max(status, cli_main(common))
        counts = (source.statistics()["CountInstances"], dest.statistics()["CountInstances"])
        print(f"\nsource holds {counts[0]} instances, destination holds {counts[1]}")
        print("\nstatus of the ledger (copydicom status):", flush=True)
        cli_main(["status", "--state", str(state)])
        return status if counts[0] == counts[1] else 1
    finally:
        source.cleanup()
        dest.cleanup()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``demo``."""
    p = subparsers.add_parser("demo", help="run the main job on local defaults with its own Orthanc servers")
    p.add_argument("--instances", type=int, default=400, help="synthetic instances to load (default 400)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (state, logs)")
    p.set_defaults(func=cmd_demo)
