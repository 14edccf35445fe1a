"""``copydicom reconcile`` with an S3 destination (real Orthanc, real SeaweedFS)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from copydicom.cli import main
from tests.support.orthanc import OrthancServer
from tests.support.seaweedfs import SeaweedFSServer
from tests.support.synthetic import ct_study_files, upload_all

pytestmark = pytest.mark.integration


@pytest.fixture
def source() -> Iterator[OrthancServer]:
    with OrthancServer("SRC") as server:
        yield server


def _last(capsys: pytest.CaptureFixture[str]) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


def test_missing_object_restored_corrupt_object_found_by_verify_and_deletions(
    seaweedfs: SeaweedFSServer, bucket: str, source: OrthancServer, aws_env: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    upload_all(source.upload, ct_study_files(10, patients=2, series_per_study=2, rows=8, cols=8))
    url = seaweedfs.url(bucket, "arch/")
    args = ["--src", source.url_with_credentials, "--dest", url, "--state", str(tmp_path / "state.db")]
    assert main(["replicate", *args]) == 0
    capsys.readouterr()
    keys = seaweedfs.keys(bucket)
    assert len(keys) == 10
    assert main(["reconcile", *args]) == 0
    assert _last(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")

    client = seaweedfs.client()
    client.delete_object(Bucket=bucket, Key=keys[0])
    assert main(["reconcile", *args]) == 0
    assert _last(capsys).startswith("missing=1 repaired=1 ")
    assert seaweedfs.keys(bucket) == keys

    # a corrupt object sits at a key: it "exists", so only --verify finds it
    client.put_object(Bucket=bucket, Key=keys[1], Body=b"DICM" + b"\0" * 200)
    assert main(["reconcile", *args]) == 0
    assert _last(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")
    assert main(["reconcile", *args, "--verify"]) == 1
    assert _last(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=1 ")

    # an instance deleted at the source: reported, then propagated (DeleteObject)
    first = source.get("/instances")[0]
    source_keys = set(seaweedfs.keys(bucket))
    import requests

    requests.delete(f"{source.url}/instances/{first}", auth=source.auth, timeout=30).raise_for_status()
    assert main(["reconcile", *args, "--deletions", "report"]) == 1
    assert _last(capsys).startswith("missing=0 repaired=0 extra=1 deleted=0 ")
    assert main(["reconcile", *args, "--deletions", "propagate"]) == 0
    assert _last(capsys).startswith("missing=0 repaired=0 extra=1 deleted=1 ")
    assert len(set(seaweedfs.keys(bucket))) == len(source_keys) - 1


def test_verify_with_resend_overwrites_the_corrupt_object(
    seaweedfs: SeaweedFSServer, bucket: str, source: OrthancServer, aws_env: None, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import hashlib

    import yaml

    upload_all(source.upload, ct_study_files(4, series_per_study=1, rows=8, cols=8, seed="resend"))
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({
        "state": str(tmp_path / "state.db"),
        "endpoints": {
            "src": {"type": "orthanc", "url": source.url, "user": source.user, "password": source.password},
            "bucket": {"type": "s3", "bucket": bucket, "prefix": "arch/", "endpoint_url": seaweedfs.endpoint_url,
                       "region": seaweedfs.region},
        },
        "routes": [{"name": "r", "source": "src", "destinations": ["bucket"], "trigger": "manual",
                    "on_changed_instance": "resend"}],
    }))
    assert main(["replicate", "--config", str(config), "--src", "src", "--dest", "bucket"]) == 0
    capsys.readouterr()
    keys = seaweedfs.keys(bucket)
    client = seaweedfs.client()
    original = client.get_object(Bucket=bucket, Key=keys[2])["Body"].read()
    client.put_object(Bucket=bucket, Key=keys[2], Body=original[:-10])  # truncated copy, no recorded SHA-256
    assert main(["reconcile", "--config", str(config), "--route", "r", "--verify"]) == 0
    assert _last(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=1 ")
    restored = client.get_object(Bucket=bucket, Key=keys[2])["Body"].read()
    assert hashlib.sha256(restored).digest() == hashlib.sha256(original).digest()
    assert main(["reconcile", "--config", str(config), "--route", "r", "--verify"]) == 0
    assert _last(capsys).startswith("missing=0 repaired=0 extra=0 deleted=0 mismatched=0 ")
