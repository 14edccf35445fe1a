"""Cheap attributes for routing filters from an Orthanc source (its index, no download).

Orthanc keeps the main DICOM tags of every patient, study, series and
instance in its database (Orthanc Book, "Main DICOM tags"): Modality,
SeriesDescription, BodyPartExamined, Manufacturer, StudyDate, StudyDescription...
A route's filter is decided on them before any download; an attribute that is
not a main tag (ImageType, SOPClassUID) leaves the decision to the parsed
dataset.  The calling AE title is Orthanc's ``RemoteAET`` instance metadata,
read only when the filter uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

from copydicom.model import InstanceRef
from copydicom.stages.filters import CALLING_AE


def orthanc_describer(
    source: Any, *, keywords: frozenset[str] = frozenset()
) -> Callable[[list[InstanceRef]], list[Mapping[str, Any] | None]]:
    """A ``describe(batch)`` for :class:`~copydicom.pipeline.Pipeline` over an OrthancSource.

    One request per new series (and its study, cached), none per instance unless
    the filter reads ``CallingAETitle``.
    """
    client = source.client

    @lru_cache(maxsize=256)
    def study_tags(study_id: str) -> tuple[tuple[str, Any], ...]:
        study = client.resource("studies", study_id) or {}
        tags = {**study.get("PatientMainDicomTags", {}), **study.get("MainDicomTags", {})}
        return tuple(tags.items())

    @lru_cache(maxsize=1024)
    def series_tags(series_id: str) -> tuple[tuple[str, Any], ...] | None:
        series = client.resource("series", series_id)
        if series is None:
            return None
        return study_tags(str(series.get("ParentStudy", ""))) + tuple(series.get("MainDicomTags", {}).items())

    def describe(batch: list[InstanceRef]) -> list[Mapping[str, Any] | None]:
        out: list[Mapping[str, Any] | None] = []
        for ref in batch:
            series_id = ref.series_id
            if series_id is None:
                instance = client.resource("instances", ref.source_id) or {}
                series_id = instance.get("ParentSeries")
            tags = series_tags(str(series_id)) if series_id else None
            if tags is None:
                out.append(None)
                continue
            attrs: dict[str, Any] = dict(tags)
            if CALLING_AE in keywords:
                meta = client.get_json(f"/instances/{ref.source_id}/metadata", ok404=True, expand="") or {}
                if isinstance(meta, Mapping) and meta.get("RemoteAET"):
                    attrs[CALLING_AE] = meta["RemoteAET"]
            out.append(attrs)
        return out

    return describe


def describer_for(
    source: Any, route_filter: Any
) -> Callable[[list[InstanceRef]], list[Mapping[str, Any] | None]] | None:
    """The cheapest metadata of a route's source for its filter, or None.

    A source that lists attributes itself (DICOMweb: ``DescribedRef``) needs none;
    an Orthanc source (its REST client answers ``resource``) gets :func:`orthanc_describer`;
    others are decided on the parsed header after download.
    """
    if route_filter is None:
        return None
    client = getattr(source, "client", None)
    if client is not None and callable(getattr(client, "resource", None)) and callable(getattr(client, "get_json", None)):
        return orthanc_describer(source, keywords=frozenset(route_filter.keywords))
    return None
