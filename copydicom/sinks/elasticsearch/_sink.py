"""Bulk indexing into Elasticsearch and paged search.

Documents are indexed with their deterministic ``_id`` (Orthanc instance ID,
Irradiation Event UID for dose events), so a resend overwrites instead of
duplicating.  An index template maps the fields explicitly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from copydicom.errors import (
    ConfigError,
    CopyDicomError,
    DocumentsRejected,
    IndexUnavailable,
    classify_exception,
    status_verdict,
)
from copydicom.sinks.elasticsearch._config import ElasticsearchConfig

log = logging.getLogger(__name__)

_KEYWORD = {"type": "keyword", "ignore_above": 1024}
_TEXT_AND_KEYWORD = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 1024}}}
_DICOM_DATE = {"type": "date", "format": "basic_date||strict_date||yyyy.MM.dd"}
_ISO_DATE = {"type": "date", "format": "strict_date_optional_time||basic_date"}
_FLOAT = {"type": "float"}


def index_template(index: str) -> dict[str, Any]:
    """The composable index template body for ``index`` and ``index-*``.

    UIDs and codes are keywords, dates are dates (DICOM DA is ``basic_date``,
    PS3.5 6.2), dose values are floats, descriptions are text with a keyword
    sub-field.  The tag tree under ``tags`` is one ``flattened`` field (leaf values
    indexed as keywords): it cannot add mappings, so it cannot explode or conflict.
    Other new string fields become keywords; malformed values are ignored rather
    than rejecting the document.
    """
    properties: dict[str, Any] = {
        "doc_id": _KEYWORD, "doc_type": _KEYWORD, "ID": _KEYWORD, "ParentSeries": _KEYWORD,
        "ParentStudy": _KEYWORD, "ParentPatient": _KEYWORD, "route": _KEYWORD, "deidentified": {"type": "boolean"},
        "PatientID": _KEYWORD, "AccessionNumber": _KEYWORD, "StudyInstanceUID": _KEYWORD,
        "SeriesInstanceUID": _KEYWORD, "SOPInstanceUID": _KEYWORD, "SOPClassUID": _KEYWORD,
        "IrradiationEventUID": _KEYWORD, "Modality": _KEYWORD,
        "StudyDate": _DICOM_DATE, "SeriesDate": _DICOM_DATE, "ContentDate": _DICOM_DATE,
        "StudyTime": _KEYWORD, "ContentTime": _KEYWORD, "AcquisitionDateTime": _KEYWORD,
        "timestamp": _ISO_DATE,
        "StudyDescription": _TEXT_AND_KEYWORD, "SeriesDescription": _TEXT_AND_KEYWORD,
        "ProtocolName": _TEXT_AND_KEYWORD, "BodyPartExamined": _KEYWORD, "Manufacturer": _KEYWORD,
        "ManufacturerModelName": _KEYWORD, "StationName": _KEYWORD, "InstitutionName": _KEYWORD,
        "SeriesNumber": {"type": "integer"}, "InstanceNumber": {"type": "integer"},
        "protocol": _KEYWORD, "procedure": _KEYWORD, "event_kind": _KEYWORD,
        "ctdivol": _FLOAT, "dlp": _FLOAT, "dap": _FLOAT, "total_dlp": _FLOAT, "total_dap": _FLOAT,
        "tags": {"type": "flattened", "ignore_above": 1024, "depth_limit": 20},
        # dose documents of copydicom.stages.dose (PS3.16 TID 10011 / 10001): numbers as floats
        "event": {"properties": {"uid": _KEYWORD, "protocol": _KEYWORD, "index": {"type": "integer"}}},
        "ct": {"properties": {"ctdivol_mgy": _FLOAT, "dlp_mgy_cm": _FLOAT}},
        "projection": {"properties": {"dap_gy_m2": _FLOAT, "dose_rp_mgy": _FLOAT}},
        "totals": {"properties": {"ct_dlp_mgy_cm": _FLOAT, "dap_gy_m2": _FLOAT, "fluoro_dap_gy_m2": _FLOAT}},
        "report": {"properties": {"study_instance_uid": _KEYWORD, "sop_instance_uid": _KEYWORD}},
        "study": {"properties": {"date": {"type": "date", "format": "strict_date||basic_date"}}},
    }
    return {
        "index_patterns": [index, f"{index}-*"],
        "priority": 200,
        "template": {
            "settings": {"index.mapping.ignore_malformed": True, "index.mapping.total_fields.limit": 2000},
            "mappings": {
                "dynamic": True,
                "dynamic_templates": [
                    # values as written in the report ({"value": "12.3", "unit": "mGy"}): kept, not indexed
                    {"raw_values_not_indexed": {"path_match": "*raw", "match_mapping_type": "object",
                                                "mapping": {"type": "object", "enabled": False}}},
                    {"strings_as_keywords": {"match_mapping_type": "string", "mapping": _KEYWORD}},
                    {"numbers_as_floats": {"match_mapping_type": "long", "mapping": {"type": "double"}}},
                ],
                "properties": properties,
            },
        },
        "_meta": {"managed_by": "copydicom"},
    }


def _es_errors() -> tuple[type[Exception], ...]:
    """The client's exception classes that :meth:`ElasticsearchIndex._map` translates."""
    import elasticsearch

    return (elasticsearch.ApiError, elasticsearch.TransportError, elasticsearch.UnsupportedProductError)


class ElasticsearchIndex:
    """An :class:`~copydicom.model.IndexSink` on Elasticsearch."""

    def __init__(self, config: ElasticsearchConfig) -> None:
        from elasticsearch import Elasticsearch

        self.config = config
        self.name = config.name
        kwargs: dict[str, Any] = {
            "request_timeout": config.timeout,
            "max_retries": config.max_retries,
            "retry_on_status": (429, 502, 503, 504),
            "retry_on_timeout": True,
            "verify_certs": config.verify_certs,
        }
        if config.ca_certs:
            kwargs["ca_certs"] = config.ca_certs
        if config.api_key:
            kwargs["api_key"] = config.api_key
        elif config.username:
            kwargs["basic_auth"] = (config.username, config.password or "")
        self.client = Elasticsearch(config.url, **kwargs)
        self._template_ready = False

    # -- errors: the one table of copydicom.errors -----------------------------------------------
    def _map(self, exc: Exception, what: str, *, reject: type[CopyDicomError] | None = None) -> Exception:
        """The copydicom error for a client exception (:func:`copydicom.errors.classify_exception`)."""
        mapped = classify_exception(exc, what=f"elasticsearch {self.name}: {what}", side="index", reject=reject)
        return exc if mapped is None else mapped

    def ensure_template(self) -> None:
        """Install the index template (once per process)."""
        if self._template_ready:
            return
        body = index_template(self.config.index)
        try:
            self.client.indices.put_index_template(
                name=f"copydicom-{self.config.index}", index_patterns=body["index_patterns"],
                priority=body["priority"], template=body["template"], meta=body["_meta"])
        except _es_errors() as exc:
            raise self._map(exc, "PUT index template") from None
        self._template_ready = True

    def _actions(self, documents: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for doc in documents:
            source = {k: v for k, v in doc.items() if k != "_id"}
            source["doc_id"] = doc["_id"]
            yield {"_op_type": "index", "_index": self.config.index, "_id": doc["_id"], "_source": source}

    def send(self, documents: list[dict[str, Any]]) -> None:
        """Bulk-index ``documents``; raise IndexUnavailable if any item could not be indexed for now.

        Items refused with 429 are retried by ``streaming_bulk`` with exponential back-off;
        items still failing with 429/5xx make the whole batch retryable (resending is
        idempotent).  Items refused permanently (4xx) raise DocumentsRejected after the rest
        were indexed.
        """
        from elasticsearch.helpers import streaming_bulk

        if not documents:
            return
        self.ensure_template()
        retry: dict[str, str] = {}
        rejected: dict[str, str] = {}
        try:
            for ok, item in streaming_bulk(
                self.client, self._actions(documents), chunk_size=self.config.chunk_size,
                max_retries=self.config.max_retries, initial_backoff=self.config.backoff,
                max_backoff=max(self.config.backoff * 16, 1.0), raise_on_error=False, raise_on_exception=True,
            ):
                if ok:
                    continue
                (_, result), = item.items()
                status = int(result.get("status", 0))
                error = result.get("error")
                reason = error.get("type", "error") if isinstance(error, dict) else str(error)
                (retry if status_verdict(status) == "retry" else rejected)[str(result.get("_id"))] = reason
        except _es_errors() as exc:
            raise self._map(exc, "bulk") from None
        if retry:
            raise IndexUnavailable(f"elasticsearch {self.name}: {len(retry)} of {len(documents)} documents "
                                   f"not indexed ({sorted(set(retry.values()))})")
        if rejected:
            raise DocumentsRejected(f"elasticsearch {self.name}: {len(rejected)} documents refused "
                                    f"({sorted(set(rejected.values()))})", rejected=rejected)

    def search(self, query: str) -> Iterator[dict[str, Any]]:
        """Yield the ``_source`` of every hit, all pages (``search_after`` on ``doc_id``).

        ``query`` is a JSON query DSL clause (``{"term": {"Modality": "SR"}}`` or
        ``{"query": {...}}``) or a Lucene ``query_string`` (``Modality:SR AND StudyDate:20240101``).
        """
        text = query.strip()
        if text.startswith("{"):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"search: invalid JSON query: {exc}") from None
            clause = parsed.get("query", parsed) if isinstance(parsed, dict) else parsed
        else:
            clause = {"query_string": {"query": text or "*"}}
        after: list[Any] | None = None
        while True:
            try:
                kwargs: dict[str, Any] = {"search_after": after} if after is not None else {}
                resp = self.client.search(index=self.config.index, query=clause, size=self.config.page_size,
                                          sort=[{"doc_id": "asc"}], track_total_hits=False, **kwargs)
            except _es_errors() as exc:
                if getattr(exc, "error", None) == "index_not_found_exception":
                    return  # nothing indexed yet
                raise self._map(exc, "search", reject=ConfigError) from None
            hits = resp["hits"]["hits"]
            for hit in hits:
                source = dict(hit["_source"])
                source.pop("doc_id", None)
                source["_id"] = hit["_id"]
                yield source
            if len(hits) < self.config.page_size:
                return
            after = hits[-1]["sort"]

    def refresh(self) -> None:
        """Make recent writes searchable (tests, ``replicate-tags`` before a search)."""
        try:
            self.client.indices.refresh(index=self.config.index)
        except _es_errors() as exc:
            raise self._map(exc, "refresh") from None

    def close(self) -> None:
        self.client.close()
