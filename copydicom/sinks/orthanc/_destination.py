"""Store instances in a destination Orthanc, and tell which it already holds."""

from __future__ import annotations

from collections.abc import Iterable

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.model import Instance, StoreOutcome


class OrthancDestination:
    """A destination Orthanc server.

    Orthanc's instance IDs are a hash of the identity (see
    :func:`copydicom.model.orthanc_id`), so the destination can be asked about
    an instance by the ID of what *will* be sent, without a search.
    ``AlreadyStored`` and HTTP 409 count as success ("existing").
    """

    #: A store of an instance already held answers ``AlreadyStored`` (kept, not replaced): a source whose
    #: instances are new as a rule need not ask first (:meth:`copydicom.pipeline.Pipeline._store_answers`).
    store_reports_existing = True

    def __init__(self, config: OrthancConfig, *, pool_size: int = 8) -> None:
        self.name = config.name
        self.client = OrthancClient(config, pool_size=pool_size, side="destination")

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        """Which of ``target_ids`` are stored here.

        With ``series_hint`` (the destination's series ID of all of them) one
        request answers for the whole series; otherwise one small request each.
        """
        wanted = list(target_ids)
        if not wanted:
            return set()
        if series_hint is not None and len(wanted) > 1:
            present = self.client.series_instance_ids(series_hint)
            return set() if present is None else present.intersection(wanted)
        return {i for i in wanted if self.client.has_instance(i)}

    def store(self, instance: Instance) -> StoreOutcome:
        reply = self.client.upload(instance.data)
        return "existing" if reply.get("Status") == "AlreadyStored" else "stored"

    def replace(self, instance: Instance) -> StoreOutcome:
        """Replace the instance's older version (``on_changed_instance: resend``).

        A plain POST of an instance Orthanc already holds keeps the old bytes (``AlreadyStored``,
        unless the server sets ``OverwriteInstances``), so the old one is deleted first. Between the
        two requests the destination lacks the instance; a failure there is retried like any store
        (the ledger still points at the older version, so the next run replaces it again).
        """
        self.client.delete_instance(instance.target_id)
        self.client.upload(instance.data)
        return "stored"

    def close(self) -> None:
        self.client.close()
