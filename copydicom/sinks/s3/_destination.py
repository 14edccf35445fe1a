"""The S3 image destination: one object per DICOM instance.

Each object is the Part 10 file as sent (PS3.10 §7), with

- ``Content-Type: application/dicom`` (the media type of PS3.18 §8.7.3),
- user metadata ``sha256`` (hex digest of the bytes) and ``deidentification-method``
  (De-identification Method (0012,0063), ``none`` when Patient Identity Removed
  (0012,0062) is not ``YES``), see PS3.15 §E.1.1,
- an ``x-amz-checksum-sha256`` the server verifies before it accepts the upload
  (``BadDigest`` otherwise; per part for multipart uploads).

Dedupe and overwrite
--------------------
Keys are computed from the identity (see :mod:`copydicom.sinks.s3._keys`), so
an Orthanc ID alone does not name an object.  Hence two look-ups:

- :meth:`S3Destination.has_identities` takes identities (the dedupe stage knows
  them, already transformed by the route's de-identification) and answers with
  the Orthanc IDs (``target_id``) of those present, by one ``ListObjectsV2`` per
  key "directory" holding several of them (a series under the default template)
  or by parallel ``HEAD`` requests; it remembers the ID→identity mapping.
- :meth:`S3Destination.has` (the :class:`~copydicom.model.Destination` protocol)
  resolves the target IDs it can: through that memory, or directly when the
  template only uses ``{prefix}`` and ``{OrthancID}``.  IDs it cannot resolve are
  reported absent, and :meth:`store` still never overwrites: without
  ``allow_overwrite`` it sends ``HEAD`` first (unless ``head_before_put: false``) and then ``PUT`` with
  ``If-None-Match: *`` (the server refuses with 412 if the key appeared in the
  meantime), and answers ``"existing"``.

One look-up per key, not two
----------------------------
The pipeline asks :meth:`has_identities` for a whole batch before it fetches
anything, so a ``HEAD`` in :meth:`store` would ask the same question a second
time.  Keys a look-up found absent less than :data:`ABSENT_FRESH_SECONDS` ago are
therefore uploaded without that ``HEAD`` when ``conditional_put`` is on: the
server's ``If-None-Match: *`` still refuses an object that appeared since (412,
``"existing"``), so no-overwrite does not depend on the ``HEAD``.  With
``conditional_put: false`` (a server that does not honour the header) the
``HEAD`` stays right before the ``PUT``.  Measured on SeaweedFS 4.48, 300 CT
instances, 4 workers, 2 shared cores: the ``HEAD`` took 18 ms of the 87 ms each
instance spent in a worker (21 %); see ``notes/s3perf.md``.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import threading
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from string import Formatter
from typing import Any

from botocore.exceptions import ClientError
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from copydicom.errors import DestinationUnavailable, InvalidInstance
from copydicom.model import Identity, Instance, StoreOutcome
from copydicom.sinks.s3._client import check_bucket, make_client
from copydicom.sinks.s3._config import S3Config
from copydicom.sinks.s3._errors import error_code, http_status, s3_errors
from copydicom.sinks.s3._keys import object_key

log = logging.getLogger(__name__)

#: Look-ups of at least this many keys in one key "directory" use one listing instead of HEADs.
LIST_THRESHOLD = 4
#: Identities remembered for :meth:`S3Destination.has` (about 300 bytes each).
MEMORY_SIZE = 200_000
#: A key found absent by a look-up this recently is uploaded without another ``HEAD``
#: (only with ``conditional_put``; see "One look-up per key" above).  The pipeline stores a
#: batch within seconds of its look-up; older answers are asked again.
ABSENT_FRESH_SECONDS = 60.0
#: Keys remembered as recently absent (about 150 bytes each); the oldest are forgotten first.
ABSENT_MEMORY_SIZE = 50_000

_HEADER_TAGS = [
    "PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "PatientIdentityRemoved", "DeidentificationMethod",
]


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def _ascii(value: str, limit: int = 512) -> str:
    """Metadata values must be printable ASCII (S3 sends them as HTTP headers)."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in value)[:limit]


def deidentification_method(ds: Any) -> str:
    """The de-identification method recorded in a dataset, for object metadata.

    De-identification Method (0012,0063) joined by ``"; "`` when present; ``"none"``
    when Patient Identity Removed (0012,0062) is not ``YES`` and no method is
    recorded (PS3.15 §E.1.1 requires both after de-identification).
    """
    method = ds.get("DeidentificationMethod", None) if ds is not None else None
    if method is not None and method != "":
        values = [str(v) for v in method] if not isinstance(method, str) else [method]
        return _ascii("; ".join(values))
    removed = str(ds.get("PatientIdentityRemoved", "") or "") if ds is not None else ""
    return "unspecified" if removed.upper() == "YES" else "none"


def read_header(data: bytes) -> Any:
    """Parse the identifiers and de-identification tags of a Part 10 file (no pixels).

    Raises
    ------
    InvalidInstance
        If the bytes are not readable as DICOM.
    """
    try:
        return dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=_HEADER_TAGS)
    except (InvalidDicomError, ValueError, EOFError, KeyError, TypeError) as exc:
        raise InvalidInstance(f"not readable as DICOM: {type(exc).__name__}") from None


class S3Destination:
    """Store instances as objects in an S3 bucket (see the module documentation).

    Parameters
    ----------
    config
        Endpoint settings.
    client
        A boto3 S3 client to use instead of one built from ``config`` (tests).
    callers
        Threads that will call :meth:`store` in parallel (the route's workers, plus
        margin): the HTTP connection pool is sized for them.
    """

    def __init__(self, config: S3Config, *, client: Any | None = None, callers: int = 0) -> None:
        self.config = config
        self.name = config.name
        self._client = client if client is not None else make_client(config, callers=callers)
        self._checked = False
        self._lock = threading.Lock()
        self._memory: OrderedDict[str, Identity] = OrderedDict()
        self._absent: OrderedDict[str, float] = OrderedDict()  # key -> monotonic time of the look-up
        self._pool: ThreadPoolExecutor | None = None
        fields = {f for _, f, _, _ in Formatter().parse(config.key_template) if f is not None}
        self._keys_from_orthanc_id = fields <= {"prefix", "OrthancID"}

    # -- set-up --------------------------------------------------------------------------

    def check(self) -> None:
        """Verify the bucket exists and the credentials work (once; call at start-up).

        Raises
        ------
        ConfigError
            Missing bucket, refused credentials.
        DestinationUnavailable
            The endpoint cannot be reached.
        """
        if self._checked:
            return
        check_bucket(self._client, self.config)
        self._checked = True

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.config.max_concurrency, thread_name_prefix=f"s3-{self.name}")
            return self._pool

    def close(self) -> None:
        """Release the thread pool and the HTTP connections."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        closer = getattr(self._client, "close", None)
        if callable(closer):
            closer()

    # -- keys and look-ups ---------------------------------------------------------------

    def key_for(self, identity: Identity) -> str:
        """The object key of an identity under this destination's template."""
        return object_key(self.config.key_template, self.config.prefix, identity)

    def _remember(self, identity: Identity) -> None:
        with self._lock:
            self._memory[identity.orthanc_id] = identity
            self._memory.move_to_end(identity.orthanc_id)
            while len(self._memory) > MEMORY_SIZE:
                self._memory.popitem(last=False)

    def _key_of_target(self, target_id: str) -> str | None:
        if self._keys_from_orthanc_id:
            return self.config.key_template.format_map({"prefix": self.config.prefix, "OrthancID": target_id})
        with self._lock:
            identity = self._memory.get(target_id)
        return self.key_for(identity) if identity is not None else None

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        """Return the target IDs (Orthanc IDs of what is sent) already stored.

        Only IDs whose key is known are checked: IDs seen by :meth:`has_identities`
        or :meth:`store`, or any ID when the key template uses only ``{OrthancID}``.
        The others are reported absent; :meth:`store` then finds out (never overwriting).
        """
        keys: dict[str, str] = {}
        for target_id in target_ids:
            key = self._key_of_target(target_id)
            if key is not None:
                keys[key] = target_id
        present = self._existing_keys(list(keys))
        return {keys[k] for k in present}

    def has_identities(self, identities: Iterable[Identity]) -> set[str]:
        """Return the Orthanc IDs of the identities whose objects exist.

        Parameters
        ----------
        identities
            Identities of what will be sent (after the route's de-identification).
        """
        keys: dict[str, str] = {}
        for identity in identities:
            try:
                key = self.key_for(identity)
            except InvalidInstance:
                continue  # store() will quarantine it
            self._remember(identity)
            keys[key] = identity.orthanc_id
        present = self._existing_keys(list(keys))
        return {keys[k] for k in present}

    def _note_absent(self, keys: Iterable[str], asked_at: float) -> None:
        with self._lock:
            for key in keys:
                self._absent[key] = asked_at
                self._absent.move_to_end(key)
            while len(self._absent) > ABSENT_MEMORY_SIZE:
                self._absent.popitem(last=False)

    def _recently_absent(self, key: str) -> bool:
        """Whether a look-up found ``key`` absent moments ago (the answer is used once)."""
        with self._lock:
            asked_at = self._absent.pop(key, None)
        return asked_at is not None and time.monotonic() - asked_at < ABSENT_FRESH_SECONDS

    def _existing_keys(self, keys: list[str]) -> set[str]:
        """The subset of ``keys`` present in the bucket (listings per directory, else HEADs)."""
        if not keys:
            return set()
        asked_at = time.monotonic()
        present = self._lookup(keys)
        self._note_absent((k for k in keys if k not in present), asked_at)
        return present

    def _lookup(self, keys: list[str]) -> set[str]:
        self.check()
        groups: dict[str, list[str]] = defaultdict(list)
        for key in keys:
            groups[key.rpartition("/")[0]].append(key)
        present: set[str] = set()
        singles: list[str] = []
        for directory, members in groups.items():
            if len(members) >= LIST_THRESHOLD:
                listed = self._list_directory(directory)
                present.update(k for k in members if k in listed)
            else:
                singles.extend(members)
        if len(singles) == 1:
            if self._head(singles[0]):
                present.add(singles[0])
        elif singles:
            for key, found in zip(singles, self._executor().map(self._head, singles)):
                if found:
                    present.add(key)
        return present

    def _list_directory(self, directory: str) -> set[str]:
        prefix = f"{directory}/" if directory else ""
        found: set[str] = set()
        with s3_errors(f"LIST {self.config.location} on {self.name}"):
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.config.bucket, Prefix=prefix, Delimiter="/"):
                found.update(obj["Key"] for obj in page.get("Contents", []))
        return found

    def _head(self, key: str) -> bool:
        with s3_errors(f"HEAD object in {self.config.location} on {self.name}"):
            try:
                self._client.head_object(Bucket=self.config.bucket, Key=key)
            except ClientError as exc:
                if http_status(exc) == 404 or error_code(exc) in ("404", "NoSuchKey", "NotFound"):
                    return False
                raise
        return True

    # -- store ---------------------------------------------------------------------------

    def replace(self, instance: Instance) -> StoreOutcome:
        """Overwrite the object of an instance whose content changed at the source.

        Only the route policy ``on_changed_instance: resend`` calls this; otherwise uploads are
        conditional (``If-None-Match: *``) and an existing object is never overwritten.
        """
        return self.store(instance, overwrite=True)

    def store(self, instance: Instance, *, overwrite: bool = False) -> StoreOutcome:
        """Upload one instance; ``"existing"`` when the key exists and overwrite is off.

        Raises
        ------
        InvalidInstance
            The bytes are not DICOM, or lack the UIDs the key needs.
        DestinationUnavailable
            Endpoint down, 5xx, throttling, or the checksum check failed (retry).
        RejectedByDestination
            Any other refusal (4xx).
        ConfigError
            Credentials refused, bucket missing.
        """
        self.check()
        identity = instance.identity
        header = instance.dataset
        if identity is None or header is None:
            header = read_header(instance.data)
            if identity is None:
                identity = Identity.from_dataset(header)
        key = self.key_for(identity)
        self._remember(identity)
        target = identity.orthanc_id
        data = instance.data
        sha256 = hashlib.sha256(data).digest()
        extra: dict[str, Any] = {
            "ContentType": "application/dicom",
            "Metadata": {"sha256": sha256.hex(), "deidentification-method": deidentification_method(header)},
        }
        if self.config.sse:
            extra["ServerSideEncryption"] = self.config.sse
        if self.config.sse_kms_key_id:
            extra["SSEKMSKeyId"] = self.config.sse_kms_key_id
        if self.config.storage_class:
            extra["StorageClass"] = self.config.storage_class
        conditional = not (self.config.allow_overwrite or overwrite)
        fresh = self._recently_absent(key)  # consumed in every case: a later store asks again
        head = conditional and self.config.head_before_put and not (fresh and self.config.conditional_put)
        if head and self._head(key):
            log.debug("instance %s already in %s", target, self.name)
            return "existing"
        what = f"PUT instance {target} to {self.config.location} on {self.name}"
        with s3_errors(what):
            try:
                if len(data) >= self.config.multipart_threshold:
                    self._put_multipart(key, data, extra, conditional=conditional)
                else:
                    self._put_single(key, data, sha256, extra, conditional=conditional)
            except ClientError as exc:
                if conditional and (http_status(exc) == 412 or error_code(exc) == "PreconditionFailed"):
                    log.debug("instance %s appeared in %s during the upload", target, self.name)
                    return "existing"
                raise
        return "stored"

    def _put_single(
        self, key: str, data: bytes, sha256: bytes, extra: dict[str, Any], *, conditional: bool
    ) -> None:
        args = dict(extra, Bucket=self.config.bucket, Key=key, Body=data, ChecksumSHA256=_b64(sha256))
        if conditional and self.config.conditional_put:
            args["IfNoneMatch"] = "*"
        reply = self._client.put_object(**args)
        echoed = reply.get("ChecksumSHA256")
        if echoed is not None and echoed != _b64(sha256):
            raise DestinationUnavailable(f"{self.name}: the server stored a different SHA-256; retrying")

    def _put_multipart(self, key: str, data: bytes, extra: dict[str, Any], *, conditional: bool) -> None:
        """Multipart upload: parts in parallel, each with a SHA-256 the server checks."""
        bucket, chunk = self.config.bucket, self.config.multipart_chunksize
        upload_id = self._client.create_multipart_upload(
            Bucket=bucket, Key=key, ChecksumAlgorithm="SHA256", **extra
        )["UploadId"]

        def upload_part(number: int) -> dict[str, Any]:
            body = data[(number - 1) * chunk : number * chunk]
            digest = _b64(hashlib.sha256(body).digest())
            reply = self._client.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                ChecksumSHA256=digest,
            )
            return {"PartNumber": number, "ETag": reply["ETag"], "ChecksumSHA256": digest}

        try:
            numbers = range(1, -(-len(data) // chunk) + 1)
            parts = list(self._executor().map(upload_part, numbers))
            complete: dict[str, Any] = {
                "Bucket": bucket, "Key": key, "UploadId": upload_id, "MultipartUpload": {"Parts": parts},
            }
            if conditional and self.config.conditional_put:
                complete["IfNoneMatch"] = "*"
            self._client.complete_multipart_upload(**complete)
        except BaseException:
            try:
                self._client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - best effort; a lifecycle rule cleans up what is left
                log.warning("could not abort a multipart upload on %s", self.name)
            raise
