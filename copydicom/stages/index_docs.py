"""Pipeline stage that builds the index documents of an instance.

Place it after de-identification and :class:`~copydicom.stages.dose.DoseStage`:
it flattens the dataset that will be sent (so a route with a de-identification
profile indexes the de-identified tags), appends the instance document, and
completes the dose documents already in ``instance.documents`` with the route,
the de-identification flag, the instance ``ID`` and the event time.

On a de-identifying route the Orthanc IDs in the documents (``ID``,
``ParentSeries``, ``ParentStudy``, ``ParentPatient``) are those of the
de-identified instance: the source's IDs are SHA-1 digests of the original
PatientID and UIDs (Orthanc Book, "Orthanc identifiers"), and a digest of a
PatientID is reversed by trying candidates, so they would link a de-identified
document back to the patient. A route opts in to the source IDs with
``index_source_ids: true`` (needed to replicate from that index back to the
clinical source).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copydicom.model import Identity, Instance, orthanc_id
from copydicom.sinks.documents import dose_documents, instance_document
from copydicom.stages.flatten import flatten, read_dataset

if TYPE_CHECKING:
    from pydicom import Dataset


class IndexDocumentsStage:
    """Append ``instance_document(...)`` to ``instance.documents``.

    Parameters
    ----------
    route
        The route name written into every document.
    deidentified
        True when an earlier stage de-identifies (the route has a profile).
    source_ids
        On a de-identifying route, write the source's Orthanc IDs instead of the
        de-identified instance's (``index_source_ids: true``).
    """

    name = "index-documents"

    def __init__(self, route: str, *, deidentified: bool, source_ids: bool = False) -> None:
        self.route = route
        self.deidentified = deidentified
        self.source_ids = source_ids

    def _sent_ids(self, instance: Instance, ds: Dataset) -> dict[str, str]:
        """Orthanc IDs of the de-identified instance (what was sent), at every level."""
        ident = instance.identity if instance.identity is not None else Identity.from_dataset(ds)
        return {
            "instance": ident.orthanc_id,
            "series": ident.series_orthanc_id,
            "study": orthanc_id(ident.patient_id, ident.study_uid),
            "patient": orthanc_id(ident.patient_id),
        }

    def process(self, instance: Instance) -> Instance:
        ds = read_dataset(instance)
        flat = flatten(ds, scheme="keyword")
        if self.deidentified and not self.source_ids:
            return self._finish(instance, flat, self._sent_ids(instance, ds))
        ref = instance.ref
        source = ref.identity
        if source is None and not self.deidentified:
            ids = [str(ds.get(k, "") or "") for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")]
        elif source is not None:
            ids = [source.patient_id, source.study_uid, source.series_uid]
        else:
            ids = []
        orthanc = {"instance": ref.source_id}
        if ref.series_id:
            orthanc["series"] = ref.series_id
        elif len(ids) == 3:
            orthanc["series"] = orthanc_id(*ids)
        if len(ids) == 3:
            orthanc["study"] = orthanc_id(*ids[:2])
            orthanc["patient"] = orthanc_id(ids[0])
        return self._finish(instance, flat, orthanc)

    def _finish(self, instance: Instance, flat: dict[str, Any], orthanc: dict[str, str]) -> Instance:
        done = [d for d in instance.documents if d.get("route") is not None]
        fresh = [d for d in instance.documents if d.get("route") is None]
        instance.documents = done + dose_documents(fresh, orthanc=orthanc, route=self.route,
                                                   deidentified=self.deidentified, flat=flat)
        doc = instance_document(flat, orthanc=orthanc, route=self.route, deidentified=self.deidentified)
        instance.documents = [d for d in instance.documents if d.get("_id") != doc["_id"]] + [doc]
        return instance
