"""Pipeline stage that builds the index documents of an instance.

Place it after de-identification and :class:`~copydicom.stages.dose.DoseStage`:
it flattens the dataset that will be sent (so a route with a de-identification
profile indexes the de-identified tags), appends the instance document, and
completes the dose documents already in ``instance.documents`` with the route,
the de-identification flag, the source ``ID`` and the event time.
"""

from __future__ import annotations

from copydicom.model import Instance, orthanc_id
from copydicom.sinks.documents import dose_documents, instance_document
from copydicom.stages.flatten import flatten, read_dataset


class IndexDocumentsStage:
    """Append ``instance_document(...)`` to ``instance.documents``.

    Parameters
    ----------
    route
        The route name written into every document.
    deidentified
        True when an earlier stage de-identifies (the route has a profile).
    """

    name = "index-documents"

    def __init__(self, route: str, *, deidentified: bool) -> None:
        self.route = route
        self.deidentified = deidentified

    def process(self, instance: Instance) -> Instance:
        ds = read_dataset(instance)
        flat = flatten(ds, scheme="keyword")
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
        done = [d for d in instance.documents if d.get("route") is not None]
        fresh = [d for d in instance.documents if d.get("route") is None]
        instance.documents = done + dose_documents(fresh, orthanc=orthanc, route=self.route,
                                                   deidentified=self.deidentified, flat=flat)
        doc = instance_document(flat, orthanc=orthanc, route=self.route, deidentified=self.deidentified)
        instance.documents = [d for d in instance.documents if d.get("_id") != doc["_id"]] + [doc]
        return instance
