"""A folder of DICOM Part 10 files, read recursively: the source of ``copydicom import``.

YAML ``{type: folder, path: /data/incoming}`` (a relative path is taken from the
configuration file's folder); URL ``file:///data/incoming``.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field

from copydicom.errors import ConfigError
from copydicom.model import Source
from copydicom.registry import BuildContext, EndpointConfig, EndpointType


class FolderConfig(EndpointConfig):
    """Where the files are.

    Attributes
    ----------
    path
        The folder, read recursively.
    batch_size
        References per batch (one directory never mixes with another).
    """

    type: str = "folder"
    path: Path
    batch_size: int = Field(default=200, ge=1)

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> FolderConfig:
        """``file:///abs/folder``."""
        parts = urlsplit(url)
        if parts.scheme != "file" or not parts.path:
            raise ConfigError(f"{url!r}: expected file:///path/to/folder")
        path = Path(unquote(parts.path))
        from copydicom.sources.folder import path_digest

        # A folder's path may name a patient: the endpoint's name (in route names, logs, metrics) is a digest.
        return cls(name=name or f"folder:{path_digest(path)}", path=path)


def _source(config: FolderConfig, ctx: BuildContext) -> Source:
    from copydicom.sources.folder import FolderSource

    return FolderSource(config.path, batch_size=config.batch_size)


ENDPOINT: EndpointType[FolderConfig] = EndpointType(
    name="folder",
    description="A folder of DICOM files, read recursively (the import source)",
    schemes=("file",),
    config=FolderConfig,
    source=_source,
)
