"""copydicom: replicate DICOM archives, de-identify in flight, and index tags and radiation dose.

The Python API (see the README, "Python API")::

    import copydicom

    summary = copydicom.replicate("http://user:pw@127.0.0.1:8042", "s3://bucket/ct/?region=eu-west-1")
    print(summary.line())   # replicated=N skipped_existing=M quarantined=Q failed=F seconds=S

:func:`replicate`, :func:`replicate_tags` and :func:`conditional_replicate`
build their route through the same validator and assembly path as the
command line.  Importing this package loads no client library (boto3,
elasticsearch, splunklib, pynetdicom, celery): they load when used.
"""

from copydicom.api import conditional_replicate, replicate, replicate_tags
from copydicom.errors import (
    ConfigError,
    CopyDicomError,
    FatalError,
    RetryableError,
    SkippableError,
)

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "CopyDicomError",
    "FatalError",
    "RetryableError",
    "SkippableError",
    "__version__",
    "conditional_replicate",
    "replicate",
    "replicate_tags",
]
