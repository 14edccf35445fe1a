"""De-identification commands: ``deidentify``, ``scan``, ``deid-map export``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING


from copydicom.errors import ConfigError, SkippableError
from copydicom.model import Instance, InstanceRef

if TYPE_CHECKING:
    from copydicom.stages.deid import DeidProfile


def _files(paths: list[str]) -> Iterator[Path]:
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            for root, _dirs, names in os.walk(p):
                for name in sorted(names):
                    yield Path(root) / name
        else:
            yield p


def _profile(args: argparse.Namespace) -> DeidProfile:
    from copydicom.config import load_profiles
    from copydicom.stages.deid import DeidProfile

    if args.config:
        profiles = load_profiles(args.config)  # paths relative to the file, as for `run`
        if args.profile not in profiles:
            if args.profile == "default":
                return DeidProfile.default()
            raise ConfigError(f"--profile: no profile {args.profile!r} in {args.config} (has {sorted(profiles)})")
        return profiles[args.profile]
    if args.profile != "default":
        raise ConfigError(f"--profile {args.profile}: give --config with a profiles: section")
    return DeidProfile.default()


def cmd_deidentify(args: argparse.Namespace) -> int:
    from copydicom.stages.deid import DeidProfile, DeidStage, MappingStore, load_key

    profile = _profile(args)
    assert isinstance(profile, DeidProfile)
    key_file = args.key_file or profile.key_file or os.environ.get("COPYDICOM_DEID_KEY_FILE")
    if not key_file:
        raise ConfigError("--key-file: required (or key_file in the profile)")
    key = load_key(key_file, where="--key-file" if args.key_file else f"profiles.{profile.name}.key_file")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    store = MappingStore(args.state) if args.state else None
    stage = DeidStage(profile, key, store)
    done = quarantined = 0
    try:
        for path in _files(args.inputs):
            try:
                data = path.read_bytes()
                result = stage.process(Instance(InstanceRef(str(path)), data))
            except SkippableError as exc:
                quarantined += 1
                print(f"quarantined {path}: {exc.code}: {exc}", file=sys.stderr)
                continue
            except OSError as exc:
                quarantined += 1
                print(f"quarantined {path}: unreadable: {exc.strerror}", file=sys.stderr)
                continue
            assert result.identity is not None
            target = out / f"{result.identity.sop_uid}.dcm"
            target.write_bytes(result.data)
            done += 1
    finally:
        if store is not None:
            store.close()
    print(f"{done} de-identified, {quarantined} quarantined -> {out}")
    return 1 if quarantined else 0


def cmd_scan(args: argparse.Namespace) -> int:
    from copydicom.stages.deid import scan_file

    found = 0
    for path in _files(args.paths):
        try:
            findings = scan_file(path)
        except Exception as exc:  # noqa: BLE001 - not DICOM: say so, keep scanning
            print(f"{path}: not readable as DICOM ({type(exc).__name__})")
            continue
        for f in findings:
            print(f"{path}: {f}")
        found += len(findings)
    print(f"{found} possible identifier(s) found")
    return 1 if found else 0


def cmd_map_export(args: argparse.Namespace) -> int:
    from copydicom.stages.deid import MappingStore

    if not Path(args.state).exists():
        raise ConfigError(f"--state: {args.state} does not exist")
    store = MappingStore(args.state)
    try:
        written = store.export(args.out)
    finally:
        store.close()
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the de-identification commands."""
    p = subparsers.add_parser("deidentify", help="de-identify DICOM files into a folder (PS3.15)")
    p.add_argument("inputs", nargs="+", metavar="IN", help="files or folders (recursively)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--profile", default="default", help="profile name (default: the built-in default)")
    p.add_argument("--config", help="YAML file with a profiles: section")
    p.add_argument("--key-file", help="owner-only key file (overrides the profile's key_file)")
    p.add_argument("--state", help="SQLite file recording old->new UIDs and PatientIDs")
    p.set_defaults(func=cmd_deidentify)

    s = subparsers.add_parser("scan", help="report what in DICOM files could still identify a person")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.set_defaults(func=cmd_scan)

    m = subparsers.add_parser("deid-map", help="de-identification mapping (old -> new identifiers)")
    msub = m.add_subparsers(dest="deid_map_command", metavar="ACTION")
    msub.required = True
    e = msub.add_parser("export", help="write uids.csv and patient_ids.csv (id_old,id_new)")
    e.add_argument("--out", required=True, help="output folder")
    e.add_argument("--state", required=True, help="the state database (SQLite)")
    e.set_defaults(func=cmd_map_export)
