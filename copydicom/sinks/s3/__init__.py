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

_LAZY = {
    "check_bucket": "_client",
    "make_client": "_client",
    "S3Destination": "_destination",
    "deidentification_method": "_destination",
    "read_header": "_destination",
    "map_s3_error": "_errors",
    "s3_errors": "_errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from importlib import import_module  # static names above; this only defers the import

        return getattr(import_module(f"copydicom.sinks.s3.{_LAZY[name]}"), name)
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
