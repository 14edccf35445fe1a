"""The S3 source of ``restore``: paginated listings, study filter, fetch, errors."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import InstanceRef
from copydicom.sinks.s3 import S3Config
from copydicom.sources.s3 import S3Source

BUCKET = "research-archive"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for study in ("1.1", "1.2"):
            for series in ("9.1", "9.2"):
                for sop in range(3):
                    client.put_object(Bucket=BUCKET, Key=f"ct/{study}/{series}/{sop}.dcm", Body=f"{study}{sop}".encode())
        client.put_object(Bucket=BUCKET, Key="ct/1.1/", Body=b"")
        client.put_object(Bucket=BUCKET, Key="other/1.1/9.1/0.dcm", Body=b"x")
        yield client


def _source(**kw: Any) -> S3Source:
    return S3Source(S3Config.from_url(f"s3://{BUCKET}/ct/?region=us-east-1"), **kw)


def test_lists_every_object_under_the_prefix_in_series_batches(s3: Any) -> None:
    source = _source(page_size=2)
    calls: list[str] = []
    source._client.meta.events.register("before-call.s3.ListObjectsV2", lambda **kw: calls.append("list"))
    batches = list(source.batches())
    assert [[r.source_id for r in b] for b in batches] == [
        [f"ct/{st}/{se}/{i}.dcm" for i in range(3)] for st in ("1.1", "1.2") for se in ("9.1", "9.2")
    ]
    assert len(calls) == 7  # 13 keys (with the folder marker) by 2


def test_study_filter_lists_only_that_study(s3: Any) -> None:
    source = _source(studies=["1.2"])
    assert [r.source_id for r in source.refs()] == [f"ct/1.2/{se}/{i}.dcm" for se in ("9.1", "9.2") for i in range(3)]
    assert source.fetch(InstanceRef("ct/1.2/9.1/2.dcm")) == b"1.22"


def test_study_filter_needs_a_study_template(s3: Any) -> None:
    config = S3Config.from_url(f"s3://{BUCKET}/ct/?key_template={{prefix}}{{OrthancID}}.dcm")
    with pytest.raises(ConfigError, match="cannot be listed"):
        S3Source(config, studies=["1.2"])


def test_missing_object_is_invalid_and_missing_bucket_is_config(s3: Any) -> None:
    with pytest.raises(InvalidInstance, match="NoSuchKey"):
        _source().fetch(InstanceRef("ct/none.dcm"))
    with pytest.raises(ConfigError, match="does not exist"):
        S3Source(S3Config.from_url("s3://no-such-bucket/?region=us-east-1")).check()
