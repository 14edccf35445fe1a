"""De-identification commands: ``deidentify``, ``scan``, ``deid-map export``."""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
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
            builtin = DeidProfile.named(args.profile)
            if builtin is not None:
                return builtin
            raise ConfigError(f"--profile: no profile {args.profile!r} in {args.config} (has {sorted(profiles)})")
        return profiles[args.profile]
    builtin = DeidProfile.named(args.profile)
    if builtin is None:
        raise ConfigError(f"--profile {args.profile}: not built in (default, private_only, hipaa_safe_harbor); "
                          "give --config with a profiles: section")
    return builtin


def _check_out(out: Path, inputs: list[str]) -> None:
    """Refuse an ``--out`` that is a file, or equal to or inside an input folder."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out: {out} exists and is not a folder")
    real = out.resolve()
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            inp = p.resolve()
            if real == inp or inp in real.parents:
                raise ConfigError(f"--out: {out} is {'the input folder' if real == inp else 'inside the input folder'}"
                                  f" {raw} (a second run would de-identify its own outputs)")


def _write_new(dir_fd: int, name: str, data: bytes) -> None:
    """Write ``name`` in the output folder without following a symlink planted there.

    The bytes go to a fresh temporary name (``O_CREAT | O_EXCL | O_NOFOLLOW``, mode 0600), then
    ``rename`` replaces the directory entry ``name`` itself: a symlink at that name is
    replaced, its target is never opened.
    """
    tmp = f".{name}.{secrets.token_hex(6)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(tmp, flags, 0o600, dir_fd=dir_fd)  # owner-only whatever the umask (a kept pixel or a
    try:                                                # private_only output can still identify someone)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except OSError:
            pass
        raise


def cmd_deidentify(args: argparse.Namespace) -> int:
    from copydicom.stages.deid import DeidProfile, DeidStage, MappingStore, load_key

    profile = _profile(args)
    assert isinstance(profile, DeidProfile)
    key_file = args.key_file or profile.key_file or os.environ.get("COPYDICOM_DEID_KEY_FILE")
    if not key_file:
        raise ConfigError("--key-file: required (or key_file in the profile)")
    key = load_key(key_file, where="--key-file" if args.key_file else f"profiles.{profile.name}.key_file")
    out = Path(args.out)
    _check_out(out, args.inputs)
    started = time.monotonic()
    try:
        out.mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise ConfigError(f"--out: cannot use {out}: {exc.strerror}") from None
    store = MappingStore(args.state) if args.state else None
    stage = DeidStage(profile, key, store)
    done = quarantined = failed = 0
    written: dict[str, int] = {}  # output SOP Instance UID -> number of the input file that produced it
    try:
        for number, path in enumerate(_files(args.inputs), start=1):
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
            except Exception as exc:  # noqa: BLE001 - one bad file must not abandon the rest of the folder
                quarantined += 1
                print(f"quarantined {path}: invalid: cannot process ({type(exc).__name__})", file=sys.stderr)
                continue
            assert result.identity is not None
            sop = result.identity.sop_uid
            if sop in written:  # two inputs, one output: never let the later overwrite the first
                quarantined += 1
                print(f"quarantined {path}: duplicate: SOP Instance UID already written in this run by input "
                      f"file #{written[sop]}; not written", file=sys.stderr)
                continue
            try:
                _write_new(dir_fd, f"{sop}.dcm", result.data)
            except OSError as exc:
                failed += 1
                print(f"failed {path}: cannot write output: {exc.strerror}", file=sys.stderr)
                continue
            written[sop] = number
            done += 1
    finally:
        os.close(dir_fd)
        if store is not None:
            store.close()
    print(f"replicated={done} skipped_existing=0 quarantined={quarantined} failed={failed} "
          f"seconds={time.monotonic() - started:.1f}")
    return 1 if quarantined or failed else 0


def cmd_scan(args: argparse.Namespace) -> int:
    """Exit 0 only when every file was read and nothing was found; an unreadable file is not clean."""
    from copydicom.stages.deid import scan_file

    found = unreadable = files = 0
    for path in _files(args.paths):
        files += 1
        try:
            findings = scan_file(path)
        except SkippableError as exc:
            unreadable += 1
            print(f"{path}: not readable as DICOM: {exc}")
            continue
        except OSError as exc:
            unreadable += 1
            print(f"{path}: cannot read: {exc.strerror}")
            continue
        except Exception as exc:  # noqa: BLE001 - not DICOM: say so, keep scanning
            unreadable += 1
            print(f"{path}: not readable as DICOM ({type(exc).__name__})")
            continue
        for f in findings:
            print(f"{path}: {f}")
        found += len(findings)
    print(f"{found} possible identifier(s) found in {files} file(s); {unreadable} not readable (not clean)")
    return 1 if found or unreadable or not files else 0


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
    p.add_argument("--profile", default="default",
                   help="profile name: default, private_only, hipaa_safe_harbor, or one from --config")
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
