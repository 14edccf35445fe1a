"""The console's backend and upload runner built from a validated configuration.

Uploads and retries go through the one assembly path (:func:`copydicom.routes.build_route`):
an upload runs the chosen route (its de-identification profile, destinations and indexes)
with the uploaded files as its source; a retry is :func:`copydicom.quarantine.retry_entries`,
the same as ``copydicom quarantine retry``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

from copydicom.config import AppConfig
from copydicom.console._backend import StateBackend
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger


def _profile_with_map(profile: Any, patient_csv: Path | None) -> Any:
    """The route's profile with the upload's CSV as its patient map (same columns as the profile's own)."""
    if patient_csv is None:
        return profile
    if profile is None:
        raise ConfigError("a patient map CSV needs a route with a de-identification profile")
    from copydicom.stages.deid import PatientMap

    own = profile.patient_map
    spec: dict[str, Any] = {"csv": str(patient_csv), "missing": own.missing if own is not None else "quarantine"}
    return dataclasses.replace(profile, patient_map=PatientMap.from_mapping(spec, where="upload csv"))


def upload_route(config: AppConfig, route_name: str, folder: Path, patient_csv: Path | None) -> tuple[Any, AppConfig]:
    """The configured route with the job's folder as its source (and the CSV as its patient map)."""
    from copydicom.endpoints.folder import FolderConfig

    route = next(r for r in config.routes if r.name == route_name)
    source = FolderConfig(name=f"upload:{route_name}", path=folder)
    profiles = dict(config.profiles)
    if route.profile is not None:
        profiles[route.profile] = _profile_with_map(profiles[route.profile], patient_csv)
    elif patient_csv is not None:
        raise ConfigError("a patient map CSV needs a route with a de-identification profile")
    app = dataclasses.replace(
        config,
        endpoints={**config.endpoints, source.name: source},
        endpoint_types={**config.endpoint_types, source.name: "folder"},
        profiles=profiles,
    )
    trigger = dataclasses.replace(route.trigger, kind="manual")
    # copydicom.quarantine retries "upload:" entries from their saved copies; not "upload+csv:" ones
    # (the job's patient CSV is gone, and another map would give other pseudonyms).
    name = f"upload+csv:{route_name}" if patient_csv is not None else f"upload:{route_name}"
    return dataclasses.replace(route, name=name, source=source.name, trigger=trigger), app


def make_upload_runner(config: AppConfig, ledger: Ledger) -> Callable[..., None]:
    """An :class:`~copydicom.console._jobs.UploadRunner` for the configured routes."""
    from copydicom.routes import build_route

    def run(files: list[Path], *, route: str, patient_csv: Path | None,
            on_outcome: Callable[[int, str, str], None]) -> None:
        folder = files[0].parent if files else Path(".")
        spec, app = upload_route(config, route, folder, patient_csv)
        position = {str(p): i for i, p in enumerate(files)}
        runtime = build_route(spec, app, ledger)
        try:
            for outcome in runtime.pipeline.stream(runtime.source.batches()):
                reason = outcome.reason.split(":", 1)[0] if outcome.kind not in ("stored", "existing") else ""
                on_outcome(position.get(outcome.ref.source_id, -1), outcome.kind, reason)
                for name, warning in outcome.warnings:  # stored, with a warning: also counted as one
                    on_outcome(position.get(outcome.ref.source_id, -1), "warning", f"{name}: {warning}")
        finally:
            runtime.close()  # an index destination delivers its spool on close

    return run


def make_retry(config: AppConfig, ledger: Ledger) -> Callable[[list[Any]], dict[str, int]]:
    """Re-process quarantine entries through their configured route; entries stay until delivered."""
    from copydicom.quarantine import retry_entries

    routes = {r.name: r for r in config.routes}

    def retry(entries: list[Any]) -> dict[str, int]:
        summary, _unknown = retry_entries(config, ledger, entries, routes)
        c = summary.counts
        return {"replicated": c["stored"], "skipped_existing": c["existing"],
                "quarantined": c["quarantined"], "failed": c["failed"], "warnings": summary.warnings}

    return retry


def make_backend(config: AppConfig, ledger: Ledger, live: Callable[[], list[Any]] | None = None) -> StateBackend:
    """The console backend of a configuration (the dose page reads its first sqlite index)."""
    dose_index = next((Path(e.path) for n, e in config.endpoints.items()
                       if config.endpoint_types.get(n) == "sqlite"), None)

    def spool() -> dict[str, int]:
        try:
            return dict(ledger.store.spool_sizes())
        except Exception:  # noqa: BLE001 - the overview must render even if the spool cannot be read
            return {}

    return StateBackend(ledger, lambda: [r.name for r in config.routes], live=live,
                        retry_fn=make_retry(config, ledger), dose_index=dose_index, spool_fn=spool)
