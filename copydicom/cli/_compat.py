"""CopyDICOM's command lines, accepted unchanged (the seed's ``replicate_tags`` and ``conditional_replicate``).

CopyDICOM knew one index, Splunk, written as two plain URLs::

    --index https://admin:changeme@localhost:8089     (the management port: searches)
    --hec   http://Splunk:<token>@localhost:8088      (the HTTP Event Collector: writes; the token as password)

copydicom's own URL rules give ``http(s)://`` to Orthanc, so a plain ``http(s)://`` ``--index`` means Splunk
exactly when ``--hec`` is given, or when the command is invoked by its CopyDICOM name
(``replicate_tags``, ``conditional_replicate``), since CopyDICOM had no other index; everywhere else the
registry's schemes apply (``splunk+https://``, ``es+https://``, ``sqlite:///``). CopyDICOM's index was
called ``dicom`` (its queries say ``search index=dicom``).
"""

from __future__ import annotations

from urllib.parse import quote, unquote, urlencode, urlsplit

from copydicom.errors import ConfigError

#: The CopyDICOM spellings, registered as aliases of the copydicom commands.
COPYDICOM_NAMES = ("replicate_tags", "conditional_replicate")
COPYDICOM_INDEX = "dicom"


def splunk_index_url(index: str, hec: str | None, *, copydicom_name: bool) -> str:
    """``--index``/``--hec`` in CopyDICOM's form as one ``splunk+http(s)://`` URL; other forms unchanged."""
    parts = urlsplit(index)
    if parts.scheme not in ("http", "https") or not (hec or copydicom_name):
        if hec:
            raise ConfigError("--hec: goes with a plain http(s):// --index (CopyDICOM's Splunk form)")
        return index
    if not parts.hostname:
        raise ConfigError("--index: a host is required (https://user:password@host:8089)")
    auth = ""
    if parts.username:
        auth = quote(unquote(parts.username), safe="")
        if parts.password is not None:
            auth += ":" + quote(unquote(parts.password), safe="")
        auth += "@"
    port = f":{parts.port}" if parts.port else ""
    query: dict[str, str] = {"index": COPYDICOM_INDEX}
    if hec:
        h = urlsplit(hec)
        if h.scheme not in ("http", "https") or not h.hostname:
            raise ConfigError("--hec: expected http(s)://Splunk:TOKEN@host:8088")
        query["hec"] = f"{h.scheme}://{h.hostname}" + (f":{h.port}" if h.port else "")
        if h.password:
            query["hec_token"] = unquote(h.password)
    return f"splunk+{parts.scheme}://{auth}{parts.hostname}{port}?{urlencode(query)}"
