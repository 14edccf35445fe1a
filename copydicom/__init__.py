"""copydicom: replicate an Orthanc archive, de-identify in flight, and index tags and radiation dose."""

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
]
