"""An S3 destination's inventory for reconcile: one prefix listing per study (no object bytes).

The key template must keep a study under one prefix (``{prefix}{StudyInstanceUID}/...``,
the default); the keys of the default template are read back into identities
(``{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm`` plus the study's
patient ID known from the source), so extra objects are recognised by their Orthanc ID.
Objects under other templates count as ``unknown``: reported, never deleted.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

from copydicom.errors import ConfigError
from copydicom.model import Identity
from copydicom.reconcile._types import Digest, StudyListing
from copydicom.sinks.s3._keys import DEFAULT_KEY_TEMPLATE, study_prefix


class S3DestinationInventory:
    """Listings, digests and deletes of an :class:`~copydicom.sinks.s3.S3Destination`."""

    def __init__(self, destination: Any) -> None:
        self.destination = destination
        self.name = str(destination.name)
        self.config = destination.config
        if study_prefix(self.config.key_template, self.config.prefix, "1") is None:
            raise ConfigError(
                f"{self.name}: reconcile needs a key template that keeps a study under one prefix "
                "({prefix}{StudyInstanceUID}/...)"
            )
        self._parse = self.config.key_template == DEFAULT_KEY_TEMPLATE

    def study_counts(self) -> Iterator[tuple[str, int]] | None:
        return None  # the study's prefix is listed per study instead

    def study_ids_of_counts(self) -> bool:
        return False

    def listing_by_id(self, study_id: str) -> StudyListing:
        return StudyListing()

    def _keys(self, prefix: str) -> Iterator[tuple[str, int]]:
        from copydicom.sinks.s3._errors import s3_errors

        with s3_errors(f"LIST {self.config.location} on {self.name}"):
            paginator = self.destination._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix):
                for obj in page.get("Contents", []):
                    yield str(obj["Key"]), int(obj.get("Size", 0))

    def study(self, sent: Identity) -> StudyListing:
        self.destination.check()
        prefix = study_prefix(self.config.key_template, self.config.prefix, sent.study_uid)
        assert prefix is not None
        listing = StudyListing()
        for key, _size in self._keys(prefix):
            parts = key[len(prefix):].split("/")
            if not self._parse or len(parts) != 2 or not parts[1].endswith(".dcm"):
                listing.unknown += 1
                continue
            identity = Identity(sent.patient_id, sent.study_uid, unquote(parts[0]), unquote(parts[1][:-4]))
            listing.series.setdefault(identity.series_orthanc_id, set()).add(identity.orthanc_id)
            listing.identities[identity.orthanc_id] = identity
        return listing

    def digest(self, target_id: str, sent: Identity | None) -> Digest:
        from botocore.exceptions import ClientError

        from copydicom.sinks.s3._errors import s3_errors

        assert sent is not None
        key = self.destination.key_for(sent)
        with s3_errors(f"HEAD object in {self.config.location} on {self.name}"):
            try:
                head = self.destination._client.head_object(Bucket=self.config.bucket, Key=key)
            except ClientError:
                return Digest("sha256", None, None)
        return Digest("sha256", head.get("Metadata", {}).get("sha256"), int(head.get("ContentLength", -1)))

    def delete(self, target_id: str, sent: Identity | None) -> bool:
        """``DeleteObject`` (on a versioned bucket: a delete marker; the old version is kept)."""
        from copydicom.sinks.s3._errors import s3_errors

        assert sent is not None
        with s3_errors(f"DELETE object in {self.config.location} on {self.name}"):
            self.destination._client.delete_object(Bucket=self.config.bucket, Key=self.destination.key_for(sent))
        return True
