"""The S3 destination against a real S3 server (SeaweedFS, signatures checked)."""

from __future__ import annotations

import base64
import hashlib

import boto3
import pytest

from copydicom.errors import ConfigError, DestinationUnavailable
from copydicom.model import Identity, Instance, InstanceRef
from copydicom.sinks.s3 import S3Config, S3Destination
from tests.support.orthanc import free_port
from tests.support.seaweedfs import SeaweedFSServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration


def _destination(server: SeaweedFSServer, bucket: str, **extra: object) -> S3Destination:
    data = {
        "bucket": bucket,
        "prefix": "ct/",
        "endpoint_url": server.endpoint_url,
        "region": server.region,
        "access_key_id": server.access_key,
        "secret_access_key": server.secret_key,
        **extra,
    }
    return S3Destination(S3Config.from_mapping("archive", data, where="destinations.archive"))


def _instance(i: int, *, rows: int = 64, cols: int = 64) -> Instance:
    ds = ct_dataset(0, 0, i % 2, i, rows=rows, cols=cols)
    return Instance(InstanceRef(f"src-{i}"), to_bytes(ds))


def _key(instance: Instance) -> str:
    ds = ct_dataset(0, 0, int(instance.ref.source_id[4:]) % 2, int(instance.ref.source_id[4:]), rows=8, cols=8)
    return f"ct/{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"


def test_store_writes_the_bytes_with_type_metadata_and_checksum(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket)
    instance = _instance(0)
    assert dest.store(instance) == "stored"
    dest.close()
    client = seaweedfs.client()
    head = client.head_object(Bucket=bucket, Key=_key(instance), ChecksumMode="ENABLED")
    assert head["ContentType"] == "application/dicom"
    assert head["Metadata"] == {
        "sha256": hashlib.sha256(instance.data).hexdigest(),
        "deidentification-method": "none",
    }
    assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(instance.data).digest()).decode()
    assert client.get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == instance.data


def test_second_store_is_existing_and_does_not_overwrite(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket)
    first = _instance(1)
    assert dest.store(first) == "stored"
    changed = Instance(first.ref, first.data + b"\0\0")  # same identity, other bytes
    assert dest.store(changed) == "existing"
    body = seaweedfs.client().get_object(Bucket=bucket, Key=_key(first))["Body"].read()
    assert body == first.data


def test_if_none_match_refuses_a_key_that_appears_after_head(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket)
    instance = _instance(2)
    dest._head = lambda key: False  # type: ignore[method-assign]  # simulate the race: HEAD said absent
    seaweedfs.client().put_object(Bucket=bucket, Key=_key(instance), Body=b"other writer")
    assert dest.store(instance) == "existing"
    assert seaweedfs.client().get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == b"other writer"


def test_allow_overwrite_replaces(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket, allow_overwrite=True)
    instance = _instance(3)
    seaweedfs.client().put_object(Bucket=bucket, Key=_key(instance), Body=b"old")
    assert dest.store(instance) == "stored"
    assert seaweedfs.client().get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == instance.data


def test_multipart_upload_of_a_large_instance(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket, multipart_threshold_mb=5, multipart_chunk_mb=5)
    instance = _instance(4, rows=2048, cols=1600)  # 6.5 MB: two parts
    assert len(instance.data) > 6_000_000
    assert dest.store(instance) == "stored"
    client = seaweedfs.client()
    head = client.head_object(Bucket=bucket, Key=_key(instance), PartNumber=1)
    assert head["PartsCount"] == 2
    assert client.get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == instance.data
    assert client.head_object(Bucket=bucket, Key=_key(instance))["Metadata"]["sha256"] == hashlib.sha256(
        instance.data
    ).hexdigest()
    assert dest.store(instance) == "existing"
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_has_identities_by_listing_and_by_head(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket)
    stored = [_instance(i) for i in range(10, 20)]
    for instance in stored[:6]:
        dest.store(instance)
    identities = [Identity.from_dataset(ct_dataset(0, 0, i % 2, i, rows=8, cols=8)) for i in range(10, 20)]
    expected = {identity.orthanc_id for identity in identities[:6]}
    fresh = _destination(seaweedfs, bucket)
    assert fresh.has_identities(identities) == expected  # 5 per series: listings
    assert fresh.has_identities(identities[4:7]) == {identities[4].orthanc_id, identities[5].orthanc_id}
    assert fresh.has([i.orthanc_id for i in identities]) == expected  # remembered mapping
    assert _destination(seaweedfs, bucket).has([i.orthanc_id for i in identities]) == set()


def test_wrong_secret_is_a_config_error(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket, secret_access_key="not-the-secret")
    with pytest.raises(ConfigError, match="check the credentials"):
        dest.store(_instance(30))


def test_unknown_access_key_is_a_config_error(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket, access_key_id="NOBODY")
    with pytest.raises(ConfigError):
        dest.check()


def test_missing_bucket_is_a_config_error(seaweedfs: SeaweedFSServer) -> None:
    dest = _destination(seaweedfs, "copydicom-no-such-bucket")
    with pytest.raises(ConfigError, match="does not exist"):
        dest.store(_instance(31))


def test_unreachable_endpoint_is_retryable(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(
        seaweedfs, bucket, endpoint_url=f"http://127.0.0.1:{free_port()}", max_attempts=1, connect_timeout=1
    )
    with pytest.raises(DestinationUnavailable):
        dest.store(_instance(32))


def test_url_config_with_credentials_from_the_environment(
    seaweedfs: SeaweedFSServer, bucket: str, aws_env: None
) -> None:
    dest = S3Destination(S3Config.from_url(seaweedfs.url(bucket, "ct/")))
    instance = _instance(33)
    assert dest.store(instance) == "stored"
    client = boto3.client("s3", **seaweedfs.credentials())
    assert client.get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == instance.data


@pytest.mark.parametrize("sign_payload", [False, True], ids=["checksum-signed", "payload-signed"])
def test_the_server_checks_the_sha256_and_a_mismatch_is_retried(
    seaweedfs: SeaweedFSServer, bucket: str, monkeypatch: pytest.MonkeyPatch, sign_payload: bool
) -> None:
    """The body's SHA-256 is checked by the server, also when the signature covers only the checksum header
    (``sign_payload: false``, the default: ``UNSIGNED-PAYLOAD`` with a signed ``x-amz-checksum-sha256``)."""
    import copydicom.sinks.s3._destination as module

    class WrongHashlib:
        @staticmethod
        def sha256(data: bytes) -> hashlib._Hash:
            return hashlib.sha256(data + b"corrupted in transit")

    monkeypatch.setattr(module, "hashlib", WrongHashlib)
    dest = _destination(seaweedfs, bucket, max_attempts=1, sign_payload=sign_payload)
    instance = _instance(34)
    with pytest.raises(DestinationUnavailable, match="BadDigest"):
        dest.store(instance)
    assert seaweedfs.client().list_objects_v2(Bucket=bucket).get("KeyCount") == 0
    monkeypatch.setattr(module, "hashlib", hashlib)
    assert dest.store(instance) == "stored"  # the same client, the right digest: accepted


def _identity(instance: Instance) -> Identity:
    from copydicom.sinks.s3 import read_header

    return Identity.from_dataset(read_header(instance.data))


def _count_calls(dest: S3Destination) -> dict[str, int]:
    calls: dict[str, int] = {}
    dest._client.meta.events.register(
        "before-call.s3", lambda model, **kw: calls.__setitem__(model.name, calls.get(model.name, 0) + 1)
    )
    return calls


def test_after_a_look_up_one_put_per_instance_still_verified(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    """The pipeline's look-up replaces store's HEAD; the server still checks the SHA-256 (notes/s3perf.md)."""
    dest = _destination(seaweedfs, bucket)
    instances = [_instance(i) for i in range(20, 28)]  # two series of four: one listing each
    assert dest.has_identities(_identity(i) for i in instances) == set()
    calls = _count_calls(dest)
    assert [dest.store(i) for i in instances] == ["stored"] * 8
    assert calls == {"PutObject": 8}
    client = seaweedfs.client()
    for instance in instances:
        head = client.head_object(Bucket=bucket, Key=_key(instance), ChecksumMode="ENABLED")
        assert head["ChecksumSHA256"] == base64.b64encode(hashlib.sha256(instance.data).digest()).decode()


def test_after_a_look_up_a_key_written_meanwhile_is_not_overwritten(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket)
    instance = _instance(30)
    assert dest.has_identities([_identity(instance)]) == set()
    seaweedfs.client().put_object(Bucket=bucket, Key=_key(instance), Body=b"other writer")
    calls = _count_calls(dest)
    assert dest.store(instance) == "existing"  # 412 from If-None-Match: *
    assert calls == {"PutObject": 1}
    assert seaweedfs.client().get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == b"other writer"


def test_after_a_look_up_multipart_is_not_overwritten_either(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    dest = _destination(seaweedfs, bucket, multipart_threshold_mb=5, multipart_chunk_mb=5)
    instance = _instance(31, rows=2048, cols=1600)  # 6.5 MB: two parts
    assert dest.has_identities([_identity(instance)]) == set()
    seaweedfs.client().put_object(Bucket=bucket, Key=_key(instance), Body=b"other writer")
    assert dest.store(instance) == "existing"  # CompleteMultipartUpload carries If-None-Match: *
    client = seaweedfs.client()
    assert client.get_object(Bucket=bucket, Key=_key(instance))["Body"].read() == b"other writer"
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    other = _instance(32, rows=2048, cols=1600)
    assert dest.has_identities([_identity(other)]) == set()
    assert dest.store(other) == "stored"
    assert client.head_object(Bucket=bucket, Key=_key(other), PartNumber=1)["PartsCount"] == 2
    assert client.get_object(Bucket=bucket, Key=_key(other))["Body"].read() == other.data
