"""The console's backend and upload runner built from a validated configuration.

Uploads and retries go through the same assembly path as every command: the
route's stages (de-identification, dose, index documents), destinations and
indexes, with the uploaded files as the source.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from copydicom.console._backend import StateBackend
from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import InstanceRef


class UploadedFiles:
    """A source over the files of one upload job (named ``NNNNNN.dcm`` by the receiver: no PHI)."""

    def __init__(self, files: list[Path]) -> None:
        self.name = "upload"
        self.files = files

    def batches(self) -> Iterator[list[InstanceRef]]:
        for start in range(0, len(self.files), 200):
            yield [InstanceRef(source_id=str(p)) for p in self.files[start: start + 200]]

    def fetch(self, ref: InstanceRef) -> bytes:
        try:
            return Path(ref.source_id).read_bytes()
        except OSError as exc:
            raise InvalidInstance(f"cannot read an uploaded file: {exc.strerror}") from None

    def close(self) -> None:
        return None


def _profile_with_map(profile: Any, patient_csv: Path | None) -> Any:
    """The route's profile with the upload's CSV as its patient map (same columns as the profile's own)."""
    if patient_csv is None:
        return profile
    if profile is None:
        raise ConfigError("a patient map CSV needs a route with a de-identification profile")
    from copydicom.stages.deid import PatientMap

    own = profile.patient_map
    spec: dict[str, Any] = {"csv": str(patient_csv), "missing": "quarantine"}
    if own is not None:
        spec["missing"] = own.missing
    return dataclasses.replace(profile, patient_map=PatientMap.from_mapping(spec, where="upload csv"))


def make_upload_runner(config: Any, ledger: Any) -> Callable[..., None]:
    """An :class:`~copydicom.console._jobs.UploadRunner` for the configured routes."""
    from copydicom import app as assembly
    from copydicom.pipeline import Pipeline

    routes = {r.name: r for r in config.routes}

    def run(files: list[Path], *, route: str, patient_csv: Path | None,
            on_outcome: Callable[[int, str, str], None]) -> None:
        spec = routes[route]
        profile = config.profiles.get(spec.profile) if spec.profile else None
        profile = _profile_with_map(profile, patient_csv)
        stages = assembly.make_stages(profile, state=config.state, index_route=spec.name if spec.indexes else None,
                                      dose=spec.dose)
        destinations = [
            assembly.make_destination(config.endpoint_types[d], config.endpoints[d], pool_size=spec.workers + 2)
            for d in spec.destinations
        ] + [assembly.make_index_destination(config.endpoints[i], state=config.state, background=False)
             for i in spec.indexes]
        position = {str(p): i for i, p in enumerate(files)}
        source = UploadedFiles(files)
        pipeline = Pipeline(f"upload:{route}", source, stages, destinations, ledger,
                            quarantine_dir=config.quarantine_dir, workers=spec.workers)
        try:
            for outcome in pipeline.stream(source.batches()):
                on_outcome(position.get(outcome.ref.source_id, -1), outcome.kind,
                           outcome.reason.split(":", 1)[0] if outcome.kind != "stored" else "")
        finally:
            pipeline.close()
            for dest in destinations:
                dest.close()  # an index destination delivers its spool on close

    return run


def make_retry(config: Any, ledger: Any) -> Callable[[list[Any]], dict[str, int]]:
    """Re-process quarantine entries through their configured route; entries stay until delivered."""
    from copydicom.app import build_route
    from copydicom.pipeline import Summary

    routes = {r.name: r for r in config.routes}

    def retry(entries: list[Any]) -> dict[str, int]:
        summary = Summary()
        by_route: dict[str, list[Any]] = {}
        for entry in entries:
            by_route.setdefault(entry.route, []).append(entry)
        for name, items in by_route.items():
            if name not in routes:
                summary.counts["failed"] += len(items)
                continue
            runtime = build_route(routes[name], config, ledger)
            try:
                complete = getattr(runtime.source, "complete", lambda r: r)
                batches = [[complete(InstanceRef(e.source_id))] for e in items]
                for outcome in runtime.pipeline.stream(batches):
                    summary.add(outcome)
                    if outcome.kind in ("stored", "existing"):
                        entry = next(e for e in items if e.source_id == outcome.ref.source_id)
                        if entry.path:
                            Path(entry.path).unlink(missing_ok=True)
                        ledger.release(entry.route, entry.source_id)
                ledger.flush()
            finally:
                runtime.close()
        c = summary.counts
        return {"replicated": c["stored"], "skipped_existing": c["existing"],
                "quarantined": c["quarantined"], "failed": c["failed"]}

    return retry


def make_backend(config: Any, ledger: Any, live: Callable[[], list[Any]] | None = None) -> StateBackend:
    """The console backend of a configuration (the dose page reads its first sqlite index)."""
    dose_index = next((Path(e.path) for n, e in config.endpoints.items()
                       if config.endpoint_types.get(n) == "sqlite"), None)

    def spool() -> dict[str, int]:
        try:
            from copydicom.sinks.spool import spool_sizes

            return dict(spool_sizes(ledger.connection))
        except Exception:  # noqa: BLE001 - the overview must render even if the spool cannot be read
            return {}

    return StateBackend(ledger, lambda: [r.name for r in config.routes], live=live,
                        retry_fn=make_retry(config, ledger), dose_index=dose_index, spool_fn=spool)
