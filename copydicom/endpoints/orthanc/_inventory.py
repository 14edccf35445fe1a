"""Orthanc's inventory for reconcile: paged listings, no instance bytes.

Orthanc 1.10.1 gives no instance counts in ``/studies?expand`` or ``/tools/find``:
the counts come from paged ``/series?expand`` (each series lists its instance
IDs), summed per ``ParentStudy``; per study, ``/studies/{id}/series`` (expanded)
and per series ``/series/{id}/instances`` (expanded: SOPInstanceUID).
"""

from __future__ import annotations

from collections.abc import Iterator

from copydicom.clients.orthanc import OrthancClient
from copydicom.model import Identity, orthanc_id
from copydicom.reconcile._types import Digest, SourceSeries, SourceStudy, StudyListing

PAGE = 500


def _study(entry: dict) -> SourceStudy:
    return SourceStudy(
        str(entry["ID"]),
        str(entry.get("PatientMainDicomTags", {}).get("PatientID", "")),
        str(entry.get("MainDicomTags", {}).get("StudyInstanceUID", "")),
        str(entry.get("MainDicomTags", {}).get("StudyDate", "")),
    )


def _paged(client: OrthancClient, path: str) -> Iterator[dict]:
    since = 0
    while True:
        page = client.get_json(path, expand="", since=since, limit=PAGE)
        yield from page
        if len(page) < PAGE:
            return
        since += len(page)


class OrthancSourceInventory:
    """A source Orthanc's listings (:class:`copydicom.reconcile._types.SourceInventory`)."""

    def __init__(self, client: OrthancClient) -> None:
        self.client = client

    def study_counts(self) -> Iterator[tuple[str, int]]:
        for series in _paged(self.client, "/series"):
            yield str(series.get("ParentStudy", "")), len(series.get("Instances", []))

    def studies(self, *, since: str | None = None, uids: list[str] | None = None) -> Iterator[SourceStudy]:
        if uids is not None:
            for uid in uids:
                query = {"Level": "Study", "Query": {"StudyInstanceUID": uid}, "Expand": True}
                for entry in self.client._request("POST", "/tools/find", json=query).json():  # type: ignore[union-attr]
                    yield _study(entry)
            return
        if since is not None:
            # StudyDate range query (PS3.4 C.2.2.2.5: "YYYYMMDD-" means on or after); paged by Since/Limit.
            offset = 0
            while True:
                query = {"Level": "Study", "Query": {"StudyDate": f"{since}-"}, "Expand": True,
                         "Since": offset, "Limit": PAGE}
                page = self.client._request("POST", "/tools/find", json=query).json()  # type: ignore[union-attr]
                for entry in page:
                    yield _study(entry)
                if len(page) < PAGE:
                    return
                offset += len(page)
        for entry in _paged(self.client, "/studies"):
            yield _study(entry)

    def series_of(self, study: SourceStudy) -> list[SourceSeries]:
        listing = self.client.get_json(f"/studies/{study.source_id}/series", ok404=True) or []
        return [
            SourceSeries(str(s["ID"]), str(s.get("MainDicomTags", {}).get("SeriesInstanceUID", "")),
                         len(s.get("Instances", [])))
            for s in listing
        ]

    def instances_of(self, series: SourceSeries) -> list[tuple[str, str]]:
        listing = self.client.get_json(f"/series/{series.source_id}/instances", ok404=True) or []
        return [(str(i["ID"]), str(i.get("MainDicomTags", {}).get("SOPInstanceUID", ""))) for i in listing]


class OrthancDestinationInventory:
    """A destination Orthanc's listings and writes (:class:`copydicom.reconcile._types.DestinationInventory`)."""

    def __init__(self, client: OrthancClient, name: str) -> None:
        self.client = client
        self.name = name

    def study_counts(self) -> Iterator[tuple[str, int]] | None:
        return (
            (str(series.get("ParentStudy", "")), len(series.get("Instances", [])))
            for series in _paged(self.client, "/series")
        )

    def study_ids_of_counts(self) -> bool:
        return True

    def listing_by_id(self, study_id: str) -> StudyListing:
        listing = self.client.get_json(f"/studies/{study_id}/series", ok404=True) or []
        return StudyListing({str(s["ID"]): set(s.get("Instances", [])) for s in listing})

    def study(self, sent: Identity) -> StudyListing:
        return self.listing_by_id(orthanc_id(sent.patient_id, sent.study_uid))

    def digest(self, target_id: str, sent: Identity | None) -> Digest:
        return Digest("md5", self.client.instance_md5(target_id))

    def delete(self, target_id: str, sent: Identity | None) -> bool:
        return self.client.delete_instance(target_id)
