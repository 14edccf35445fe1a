"""A one-shot command with an index waits for its spool to drain, then counts what is left as failed.

Regression (issue 10): ``replicate-tags`` printed ``failed=0`` and exited 0 while every document was still
waiting in the spool because the index was down.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.cli import main
from tests.integration.conftest import load_ct
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.fake_splunk import FakeSplunk
from tests.support.orthanc import OrthancServer, free_port

pytestmark = pytest.mark.integration


def _summary(out: str) -> dict[str, str]:
    last = out.strip().splitlines()[-1]
    return dict(part.split("=", 1) for part in last.split())


def test_replicate_tags_counts_undelivered_documents_as_failed(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, _ = servers
    load_ct(source, 3, series=1, rows=8)
    port = free_port()  # nothing listens here yet: the index is down
    url = f"es+http://127.0.0.1:{port}/dicom"
    args = ["replicate-tags", "--src", source.url_with_credentials, "--index", url,
            "--state", str(tmp_path / "state.db"), "--index-timeout", "1s"]
    assert main(args) == 1
    captured = capsys.readouterr()
    summary = _summary(captured.out)
    assert summary["replicated"] == "3"
    assert summary["failed"] == "3"  # one instance document each, all still in the spool
    assert "kept in the spool" in captured.err and "next run" in captured.err

    es = FakeElasticsearch().start(port)
    try:
        assert main(args) == 0  # the next run sends what was kept
        summary = _summary(capsys.readouterr().out)
        assert summary["failed"] == "0" and summary["skipped_existing"] == "3"
        assert len(es.docs("dicom")) == 3
    finally:
        es.stop()


def test_replicate_with_splunk_index_down(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    load_ct(source, 2, series=1, rows=8)
    splunk = FakeSplunk(token="t", indexes=("dicom",)).start()
    hec = splunk.hec_url
    mgmt = splunk.mgmt.port
    splunk.stop()  # both ports closed: Splunk is down
    url = f"splunk+http://admin:changeme@127.0.0.1:{mgmt}?hec={hec}&hec_token=t&index=dicom"
    args = ["replicate", "--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
            "--index", url, "--state", str(tmp_path / "state.db"), "--index-timeout", "0s"]
    assert main(args) == 1
    captured = capsys.readouterr()
    assert _summary(captured.out)["failed"] == "2"
    assert len(dest.instance_ids()) == 2  # the images went through; only the documents wait


def test_index_timeout_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["replicate-tags", "--src", "http://127.0.0.1:9", "--index", "sqlite:///x.db", "--index-timeout", "30"])
    assert exit_info.value.code == 2
    assert "30s, 5m" in capsys.readouterr().err
