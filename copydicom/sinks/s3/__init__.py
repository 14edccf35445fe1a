"""S3 destination: DICOM instances as objects in an S3 (or S3-compatible) bucket.

See :mod:`copydicom.sinks.s3._destination` for object layout, metadata and
dedupe, :mod:`copydicom.sinks.s3._keys` for the key template, and
:mod:`copydicom.sinks.s3._errors` for how failures map to copydicom errors.

The config and key template load eagerly (no dependency); everything that
needs botocore or pydicom loads on first use (PEP 562 module ``__getattr__``),
so the endpoint registry can describe S3 without the ``s3`` extra installed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from copydicom.sinks.s3._config import S3Config
from copydicom.sinks.s3._keys import DEFAULT_KEY_TEMPLATE, KEY_FIELDS, object_key, study_prefix

if TYPE_CHECKING:
    from copydicom.sinks.s3._client import check_bucket, make_client
    from copydicom.sinks.s3._destination import S3Destination, deidentification_method, read_header
    from copydicom.sinks.s3._errors import map_s3_error, s3_errors

def __getattr__(name: str) -> Any:
    # The botocore/pydicom side loads on first use (static imports, no string lookups).
    if name in ("check_bucket", "make_client"):
        from copydicom.sinks.s3 import _client

        return getattr(_client, name)
    if name in ("S3Destination", "deidentification_method", "read_header"):
        from copydicom.sinks.s3 import _destination

        return getattr(_destination, name)
    if name in ("map_s3_error", "s3_errors"):
        from copydicom.sinks.s3 import _errors

        return getattr(_errors, name)
    raise AttributeError(name)


__all__ = [
    "DEFAULT_KEY_TEMPLATE",
    "KEY_FIELDS",
    "S3Config",
    "S3Destination",
    "check_bucket",
    "deidentification_method",
    "make_client",
    "map_s3_error",
    "object_key",
    "read_header",
    "s3_errors",
    "study_prefix",
]
