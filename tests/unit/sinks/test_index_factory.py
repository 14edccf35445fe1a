from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.errors import ConfigError
from copydicom.sinks import index_config_from_url, open_index
from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
from copydicom.sinks.spool import Spool, spool_sizes
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from tests.unit.sinks.docs_helpers import instance_doc


def test_urls_to_configs() -> None:
    assert isinstance(index_config_from_url("sqlite:///tmp/x.db"), SqliteIndexConfig)
    assert isinstance(index_config_from_url("es+http://h:9200/dicom"), ElasticsearchConfig)
    assert isinstance(index_config_from_url("splunk+https://h:8089?hec=https://h:8088&hec_token=${HOME}"),
                      SplunkConfig)
    with pytest.raises(ConfigError, match="not an index URL scheme"):
        index_config_from_url("ftp://h/x")


def test_open_by_url_name_and_config(tmp_path: Path) -> None:
    sink = open_index(f"sqlite://{tmp_path}/a.db")
    assert isinstance(sink, SqliteIndex)
    sink.close()
    cfg = SqliteIndexConfig.from_mapping("local", {"type": "sqlite", "path": str(tmp_path / "b.db")}, where="e.local")
    by_name = open_index("local", endpoints={"local": cfg})
    assert isinstance(by_name, SqliteIndex) and by_name.name == "local"
    by_name.close()
    assert isinstance(open_index("es+http://127.0.0.1:9/dicom"), ElasticsearchIndex)
    assert isinstance(open_index(SplunkConfig(name="s", hec_url="http://127.0.0.1:9", hec_token="t", index="m")),
                      SplunkIndex)
    with pytest.raises(ConfigError, match="neither an index name"):
        open_index("nosuch", endpoints={"local": cfg})
    with pytest.raises(ConfigError, match="not an index endpoint"):
        open_index(object())


def test_config_mapping_errors_name_the_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"e.x.path"):
        SqliteIndexConfig.from_mapping("x", {"type": "sqlite"}, where="e.x")
    with pytest.raises(ConfigError, match=r"e.es.index"):
        ElasticsearchConfig.from_mapping("es", {"url": "http://h:9200", "index": "Dicom"}, where="e.es")
    with pytest.raises(ConfigError, match=r"e.s.hec_token"):
        SplunkConfig.from_mapping("s", {"hec_url": "http://h:8088", "index": "main"}, where="e.s")
    secret = tmp_path / "tok"
    secret.write_text("abc\n")
    secret.chmod(0o600)
    cfg = SplunkConfig.from_mapping("s", {"hec_url": "http://h:8088", "index": "main",
                                          "hec_token_file": str(secret)}, where="e.s")
    assert cfg.hec_token == "abc"


def test_spool_sizes(tmp_path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(str(tmp_path / "ledger.db"))
    assert spool_sizes(conn) == {}
    spool = Spool(tmp_path / "ledger.db")
    spool.enqueue("es", [instance_doc(1), instance_doc(2)])
    spool.enqueue("local", [instance_doc(1)])
    assert spool_sizes(conn) == {"es": 2, "local": 1}
    spool.close()
    conn.close()


def test_url_made_indexes_have_distinct_names(tmp_path: Path) -> None:
    es = index_config_from_url("es+http://h:9200/dicom")
    sp = index_config_from_url("splunk+https://h:8089?hec=https://h:8088&hec_token=${HOME}&index=dicom")
    sq = index_config_from_url(f"sqlite://{tmp_path}/dicom.db")
    assert (es.name, sp.name, sq.name) == ("es:h:9200/dicom", "splunk:h:8088/dicom", f"sqlite:{tmp_path}/dicom.db")
