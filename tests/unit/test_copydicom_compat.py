"""CopyDICOM's --index/--hec form becomes a splunk+ URL exactly when it should."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from copydicom.cli._compat import splunk_index_url
from copydicom.errors import ConfigError
from copydicom.sinks.splunk._config import SplunkConfig


def test_index_and_hec_make_one_splunk_url() -> None:
    url = splunk_index_url("https://admin:changeme@localhost:8089", "http://Splunk:tok%2F1@localhost:8088",
                           copydicom_name=False)
    parts = urlsplit(url)
    assert parts.scheme == "splunk+https" and parts.username == "admin" and parts.port == 8089
    assert parse_qs(parts.query) == {"index": ["dicom"], "hec": ["http://localhost:8088"], "hec_token": ["tok/1"]}
    config = SplunkConfig.from_url(url)
    assert (config.hec_url, config.hec_token, config.index, config.url) == (
        "http://localhost:8088", "tok/1", "dicom", "https://localhost:8089")


def test_plain_http_index_is_splunk_only_with_hec_or_the_copydicom_name() -> None:
    assert splunk_index_url("https://o:p@pacs:8042", None, copydicom_name=False) == "https://o:p@pacs:8042"
    search_only = splunk_index_url("https://admin:changeme@localhost:8089", None, copydicom_name=True)
    config = SplunkConfig.from_url(search_only)
    assert config.url == "https://localhost:8089" and config.hec_url == "" and config.index == "dicom"
    assert splunk_index_url("sqlite:///x.db", None, copydicom_name=True) == "sqlite:///x.db"
    with pytest.raises(ConfigError, match="--hec"):
        splunk_index_url("sqlite:///x.db", "http://Splunk:t@h:8088", copydicom_name=False)
