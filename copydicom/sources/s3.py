"""Read DICOM objects back from an S3 bucket: the source of ``copydicom restore``.

Objects are listed with ``ListObjectsV2`` one page (up to 1000 keys) at a
time, so memory stays constant whatever the bucket holds, and yielded in
batches of one key "directory" (a series under the default key template),
each :class:`~copydicom.model.InstanceRef` carrying the object key as
``source_id``.  A study filter lists only ``{prefix}{StudyInstanceUID}/`` when
the key template starts that way (the default does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from copydicom.errors import ConfigError, SourceUnavailable
from copydicom.model import InstanceRef
from copydicom.sinks.s3 import S3Config, check_bucket, make_client, s3_errors, study_prefix

log = logging.getLogger(__name__)


class S3Source:
    """List and fetch the objects under an ``s3://bucket/prefix``.

    Parameters
    ----------
    config
        The bucket, prefix, endpoint and credentials (see :class:`~copydicom.sinks.s3.S3Config`).
    studies
        Only these Study Instance UIDs (needs a key template starting with
        ``{prefix}{StudyInstanceUID}/``).
    client
        A boto3 S3 client to use instead of one built from ``config`` (tests).
    page_size
        Keys per listing request (at most 1000).
    """

    def __init__(
        self,
        config: S3Config,
        *,
        studies: Iterable[str] = (),
        client: Any | None = None,
        page_size: int = 1000,
    ) -> None:
        self.config = config
        self.name = config.name
        self._client = client if client is not None else make_client(config)
        self.page_size = max(1, min(1000, page_size))
        self.prefixes: list[str] = []
        for uid in studies:
            prefix = study_prefix(config.key_template, config.prefix, uid)
            if prefix is None:
                raise ConfigError(
                    f"--study: the key template {config.key_template!r} does not start with "
                    "{prefix}{StudyInstanceUID}/, so objects of one study cannot be listed"
                )
            self.prefixes.append(prefix)
        if not self.prefixes:
            self.prefixes = [config.prefix]

    def check(self) -> None:
        """Verify the bucket exists and the credentials work."""
        check_bucket(self._client, self.config, retryable=SourceUnavailable)

    def keys(self) -> Iterator[str]:
        """Every object key under the prefixes, in key order, page by page."""
        paginator = self._client.get_paginator("list_objects_v2")
        for prefix in self.prefixes:
            with s3_errors(f"LIST {self.config.location} on {self.name}", retryable=SourceUnavailable):
                pages = paginator.paginate(
                    Bucket=self.config.bucket, Prefix=prefix, PaginationConfig={"PageSize": self.page_size}
                )
                for page in pages:
                    for obj in page.get("Contents", []):
                        key = str(obj["Key"])
                        if not key.endswith("/"):  # folder markers of some tools
                            yield key

    def batches(self, max_batch: int = 500) -> Iterator[list[InstanceRef]]:
        """References grouped by key directory (a series under the default template)."""
        batch: list[InstanceRef] = []
        directory: str | None = None
        for key in self.keys():
            here = key.rpartition("/")[0]
            if batch and (here != directory or len(batch) >= max_batch):
                yield batch
                batch = []
            directory = here
            batch.append(InstanceRef(source_id=key))
        if batch:
            yield batch

    def refs(self) -> Iterator[InstanceRef]:
        """Every reference, one at a time (the :class:`~copydicom.model.Source` protocol)."""
        for batch in self.batches():
            yield from batch

    def fetch(self, ref: InstanceRef) -> bytes:
        """The object's bytes.

        Raises
        ------
        SourceUnavailable
            Endpoint down, 5xx, throttling (retry later).
        InvalidInstance
            The object vanished or cannot be read (quarantine).
        """
        with s3_errors(f"GET object from {self.config.location} on {self.name}", retryable=SourceUnavailable):
            reply = self._client.get_object(Bucket=self.config.bucket, Key=ref.source_id)
            body = reply["Body"]
            try:
                data: bytes = body.read()
            finally:
                body.close()
        return data

    def close(self) -> None:
        closer = getattr(self._client, "close", None)
        if callable(closer):
            closer()
