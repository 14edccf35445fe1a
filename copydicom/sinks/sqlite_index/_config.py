"""Configuration of the embedded SQLite index."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from copydicom.errors import ConfigError
from copydicom.registry import EndpointConfig
from copydicom.secrets import expand_env


class SqliteIndexConfig(EndpointConfig):
    """Where the embedded index lives.

    Attributes
    ----------
    name
        The index's name in the configuration (used in logs and the spool).
    path
        The SQLite database file (created on first write).
    """

    type: str = "sqlite"
    path: Path

    def __init__(self, name: str = "", path: Path | str | None = None, **data: Any) -> None:
        # Positional (name, path) as when this was a dataclass: callers and tests use it.
        if path is not None:
            data["path"] = path
        super().__init__(name=name, **data)

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> SqliteIndexConfig:
        """Read ``{type: sqlite, path: ...}``; raises ConfigError naming the key."""
        path = data.get("path")
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.path: a file path is required for a sqlite index")
        unknown = set(data) - {"type", "path"}
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        return cls(name=name, path=Path(expand_env(path, where=f"{where}.path")).expanduser())

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> SqliteIndexConfig:
        """Parse ``sqlite:///abs/path.db`` (absolute) or ``sqlite://rel/path.db`` (relative)."""
        parsed = urlparse(url)
        if parsed.scheme != "sqlite":
            raise ConfigError(f"index URL {parsed.scheme}://...: not a sqlite URL")
        path = parsed.netloc + parsed.path if parsed.netloc else parsed.path
        if path.startswith("//"):
            path = path[1:]
        if not path or path == "/":
            raise ConfigError("sqlite index URL: a file path is required (sqlite:///path/to/index.db)")
        resolved = Path(path).expanduser()
        return cls(name=name or f"sqlite:{resolved.resolve()}", path=resolved)
