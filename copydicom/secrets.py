"""Secrets from the environment or from owner-only files, never logged.

A configuration value may be

- a literal (discouraged for secrets; :func:`resolve_secret` warns),
- ``"${ENV_VAR}"``: the variable's value (a missing variable is a configuration error),
- or given as ``<key>_file: /path``: the file's content without the trailing newline.

Files that hold secrets (passwords, tokens, the de-identification key, the
pseudonym mapping) must not be readable by group or others:
:func:`check_private_file` refuses them.
"""

from __future__ import annotations

import logging
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from copydicom.errors import ConfigError

log = logging.getLogger(__name__)

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, *, where: str) -> str:
    """Replace every ``${VAR}`` in ``value`` by the environment variable's value.

    Raises
    ------
    ConfigError
        If a referenced variable is not set; the message names ``where`` and the
        variable, never its value.
    """

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(substitute, value)


def check_private_file(path: str | Path, *, where: str) -> Path:
    """Return ``path`` if it exists and only its owner may read it.

    Raises
    ------
    ConfigError
        If the file is missing, not a regular file, or group/world-readable
        (mode must be like 0600 or 0400).
    """
    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {p}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"{where}: {p} is not a regular file")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"{where}: {p} is accessible by group or others (mode {stat.S_IMODE(st.st_mode):04o}); "
            f"run 'chmod 600 {p}'"
        )
    return p


def read_secret_file(path: str | Path, *, where: str) -> str:
    """Read an owner-only secret file and strip exactly one trailing newline (``\\n`` or ``\\r\\n``).

    Only the one line end that ``echo`` or an editor adds is removed: a secret that
    itself ends with a line break (or a carriage return) keeps it.
    """
    p = check_private_file(path, where=where)
    text = p.read_bytes().decode("utf-8")  # read_text would turn a lone CR into LF (universal newlines)
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def resolve_secret(data: Mapping[str, Any], key: str, *, where: str) -> str | None:
    """Return the secret ``key`` of a config mapping, from ``key`` or ``key_file``.

    Parameters
    ----------
    data
        The endpoint's mapping from the YAML file.
    key
        ``"password"``, ``"token"``, ``"api_key"``...
    where
        Config path of the mapping for messages (``"endpoints.pacs"``).
    """
    inline = data.get(key)
    from_file = data.get(f"{key}_file")
    if inline is not None and from_file is not None:
        raise ConfigError(f"{where}: give either {key} or {key}_file, not both")
    if from_file is not None:
        return read_secret_file(expand_env(str(from_file), where=f"{where}.{key}_file"), where=f"{where}.{key}_file")
    if inline is None:
        return None
    text = str(inline)
    if not _ENV_REF.search(text):
        log.warning("%s.%s is written inline in the configuration; prefer ${ENV_VAR} or %s_file", where, key, key)
    return expand_env(text, where=f"{where}.{key}")
