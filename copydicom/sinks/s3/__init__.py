"""S3 destination: DICOM instances as objects in an S3 (or S3-compatible) bucket.

See :mod:`copydicom.sinks.s3._destination` for object layout, metadata and
dedupe, :mod:`copydicom.sinks.s3._keys` for the key template, and
:mod:`copydicom.sinks.s3._errors` for how failures map to copydicom errors.
"""

from copydicom.sinks.s3._client import check_bucket, make_client
from copydicom.sinks.s3._config import S3Config
from copydicom.sinks.s3._destination import (
    S3Destination,
    deidentification_method,
    read_header,
)
from copydicom.sinks.s3._errors import map_s3_error, s3_errors
from copydicom.sinks.s3._keys import DEFAULT_KEY_TEMPLATE, KEY_FIELDS, object_key, study_prefix

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
