"""The S3 destination against moto's in-process S3 (fast; the real server is in tests/integration)."""

from __future__ import annotations

import base64
import hashlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from copydicom.errors import InvalidInstance
from copydicom.model import Destination, Identity, Instance, InstanceRef
from copydicom.sinks.s3 import S3Config, S3Destination, deidentification_method
from tests.support.synthetic import ct_dataset, to_bytes

BUCKET = "research-archive"


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield client


def _dest(**extra: Any) -> S3Destination:
    return S3Destination(S3Config.from_mapping("archive", {"bucket": BUCKET, "region": "us-east-1", **extra},
                                               where="destinations.archive"))


def _calls(dest: S3Destination) -> Counter[str]:
    counter: Counter[str] = Counter()
    dest._client.meta.events.register("before-call.s3", lambda model, **kw: counter.update([model.name]))
    return counter


def _instance(i: int, *, deid: bool = False, with_dataset: bool = False, rows: int = 16) -> Instance:
    ds = ct_dataset(1, 0, i % 2, i, rows=rows, cols=16)
    if deid:
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = ["copydicom basic profile", "PS3.15 E.1.1"]
    data = to_bytes(ds)
    return Instance(InstanceRef(f"src-{i}"), data, dataset=ds if with_dataset else None,
                    identity=Identity.from_dataset(ds) if with_dataset else None)


def _key(instance: Instance, prefix: str = "") -> str:
    i = int(instance.ref.source_id[4:])
    ds = ct_dataset(1, 0, i % 2, i, rows=1, cols=1)
    return f"{prefix}{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"


def test_is_a_destination(s3: Any) -> None:
    assert isinstance(_dest(), Destination)


def test_store_parses_identity_from_bytes_and_records_metadata(s3: Any) -> None:
    instance = _instance(0, deid=True)
    assert _dest(prefix="p/").store(instance) == "stored"
    head = s3.head_object(Bucket=BUCKET, Key=_key(instance, "p/"))
    assert head["ContentType"] == "application/dicom"
    assert head["Metadata"] == {
        "sha256": hashlib.sha256(instance.data).hexdigest(),
        "deidentification-method": "copydicom basic profile; PS3.15 E.1.1",
    }


def test_store_uses_the_given_identity_and_dataset(s3: Any) -> None:
    instance = _instance(1, deid=True, with_dataset=True)
    assert instance.identity is not None
    instance.identity = Identity("X", "9.8", "9.8.7", "9.8.7.6")  # as if de-identified
    dest = _dest()
    calls = _calls(dest)
    assert dest.store(instance) == "stored"
    assert s3.get_object(Bucket=BUCKET, Key="9.8/9.8.7/9.8.7.6.dcm")["Body"].read() == instance.data
    assert calls == Counter({"HeadBucket": 1, "HeadObject": 1, "PutObject": 1})


def test_second_store_is_existing_without_upload(s3: Any) -> None:
    dest = _dest()
    instance = _instance(2)
    assert dest.store(instance) == "stored"
    calls = _calls(dest)
    assert dest.store(Instance(instance.ref, instance.data + b"\0\0")) == "existing"
    assert calls == Counter({"HeadObject": 1})
    assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == instance.data


def test_sse_and_storage_class(s3: Any) -> None:
    instance = _instance(3)
    _dest(sse="AES256", storage_class="STANDARD_IA").store(instance)
    head = s3.head_object(Bucket=BUCKET, Key=_key(instance))
    assert (head["ServerSideEncryption"], head["StorageClass"]) == ("AES256", "STANDARD_IA")


def test_not_dicom_is_invalid(s3: Any) -> None:
    with pytest.raises(InvalidInstance, match="not readable as DICOM"):
        _dest().store(Instance(InstanceRef("x"), b"hello, not dicom"))


def test_multipart_above_the_threshold(s3: Any) -> None:
    dest = _dest(multipart_threshold_mb=5, multipart_chunk_mb=5)
    ds = ct_dataset(1, 0, 0, 4, rows=1800, cols=1600)
    instance = Instance(InstanceRef("src-4"), to_bytes(ds))
    calls = _calls(dest)
    assert dest.store(instance) == "stored"
    assert calls["CreateMultipartUpload"] == 1 and calls["UploadPart"] == 2 and calls["PutObject"] == 0
    assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == instance.data


def test_has_identities_lists_a_series_once_and_heads_stragglers(s3: Any) -> None:
    dest = _dest()
    instances = [_instance(i) for i in range(10)]  # series 0: even, series 1: odd
    for instance in instances[:3]:
        dest.store(instance)
    identities = [Identity.from_dataset(ct_dataset(1, 0, i % 2, i, rows=1, cols=1)) for i in range(10)]
    fresh = _dest()
    fresh.check()
    calls = _calls(fresh)
    found = fresh.has_identities(identities)
    assert found == {identities[0].orthanc_id, identities[1].orthanc_id, identities[2].orthanc_id}
    assert calls == Counter({"ListObjectsV2": 2})
    calls.clear()
    assert fresh.has_identities(identities[:2]) == {identities[0].orthanc_id, identities[1].orthanc_id}
    assert calls == Counter({"HeadObject": 2})
    calls.clear()
    assert fresh.has([i.orthanc_id for i in identities] + ["unknown"]) == found
    assert calls == Counter({"ListObjectsV2": 2})


def test_has_by_orthanc_id_when_the_template_allows(s3: Any) -> None:
    dest = _dest(key_template="{prefix}{OrthancID}.dcm")
    instance = _instance(20)
    dest.store(instance)
    target = Identity.from_dataset(ct_dataset(1, 0, 0, 20, rows=1, cols=1)).orthanc_id
    assert _dest(key_template="{prefix}{OrthancID}.dcm").has([target, "0" * 8]) == {target}
    assert s3.list_objects_v2(Bucket=BUCKET)["Contents"][0]["Key"] == f"{target}.dcm"


def test_unknown_ids_are_absent_without_requests(s3: Any) -> None:
    dest = _dest()
    calls = _calls(dest)
    assert dest.has(["a", "b"]) == set()
    assert calls == Counter()


def test_deidentification_method_values() -> None:
    ds = ct_dataset(rows=1, cols=1)
    assert deidentification_method(ds) == "none"
    ds.PatientIdentityRemoved = "YES"
    assert deidentification_method(ds) == "unspecified"
    ds.DeidentificationMethod = "Basic Appl. Conf. Prof. \u00e9"
    assert deidentification_method(ds) == "Basic Appl. Conf. Prof. ?"


def test_without_head_the_conditional_put_still_refuses_to_overwrite(s3: Any) -> None:
    dest = _dest(head_before_put=False)
    instance = _instance(21)
    assert dest.store(instance) == "stored"
    calls = _calls(dest)
    assert dest.store(Instance(instance.ref, instance.data + b"\0\0")) == "existing"
    assert calls == Counter({"PutObject": 1})
    assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == instance.data


def test_overwrites_only_when_replacing_a_changed_instance(s3: Any) -> None:
    """``on_changed_instance: resend``: S3 overwrites under this policy only (issue 11 item 3)."""
    dest = _dest()
    first = _instance(3)
    ds = ct_dataset(1, 0, 1, 3, rows=16, cols=16)
    ds.StudyDescription = "CORRECTED"
    corrected = Instance(InstanceRef("src-3"), to_bytes(ds))
    assert dest.store(first) == "stored"
    assert dest.store(corrected) == "existing"  # a plain store never overwrites
    assert s3.get_object(Bucket=BUCKET, Key=_key(first))["Body"].read() == first.data
    assert dest.replace(corrected) == "stored"
    assert s3.get_object(Bucket=BUCKET, Key=_key(first))["Body"].read() == corrected.data


# -- one look-up per key (notes/s3perf.md): the pipeline's has_identities answers for store's HEAD --


def _identity(instance: Instance) -> Identity:
    from copydicom.sinks.s3 import read_header

    return Identity.from_dataset(read_header(instance.data))


def test_a_key_just_found_absent_is_uploaded_without_a_second_head(s3: Any) -> None:
    dest = _dest()
    instances = [_instance(i) for i in range(30, 38)]
    calls = _calls(dest)
    assert dest.has_identities(_identity(i) for i in instances) == set()
    assert calls == Counter({"HeadBucket": 1, "ListObjectsV2": 2})  # two series of four: one listing each
    calls.clear()
    assert [dest.store(i) for i in instances] == ["stored"] * 8
    assert calls == Counter({"PutObject": 8})
    for instance in instances:
        assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == instance.data


def test_an_object_written_after_the_look_up_is_not_overwritten(s3: Any) -> None:
    dest = _dest()
    instance = _instance(40)
    assert dest.has_identities([_identity(instance)]) == set()
    s3.put_object(Bucket=BUCKET, Key=_key(instance), Body=b"other writer")  # the race after the look-up
    calls = _calls(dest)
    assert dest.store(instance) == "existing"  # If-None-Match: * refused it
    assert calls == Counter({"PutObject": 1})
    assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == b"other writer"


def test_the_look_up_answer_is_used_once(s3: Any) -> None:
    dest = _dest()
    instance = _instance(41)
    dest.has_identities([_identity(instance)])
    assert dest.store(instance) == "stored"
    calls = _calls(dest)
    assert dest.store(Instance(instance.ref, instance.data + b"\0\0")) == "existing"
    assert calls == Counter({"HeadObject": 1})  # asked again, nothing uploaded
    assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == instance.data


def test_a_stale_look_up_is_asked_again(s3: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    import copydicom.sinks.s3._destination as module

    dest = _dest()
    instance = _instance(42)
    dest.has_identities([_identity(instance)])
    monkeypatch.setattr(module, "ABSENT_FRESH_SECONDS", 0.0)
    calls = _calls(dest)
    assert dest.store(instance) == "stored"
    assert calls == Counter({"HeadObject": 1, "PutObject": 1})


def test_without_conditional_put_the_head_stays_before_the_put(s3: Any) -> None:
    """A server that ignores If-None-Match: the HEAD right before the PUT is the protection."""
    dest = _dest(conditional_put=False)
    instance = _instance(43)
    dest.has_identities([_identity(instance)])
    s3.put_object(Bucket=BUCKET, Key=_key(instance), Body=b"other writer")
    calls = _calls(dest)
    assert dest.store(instance) == "existing"
    assert calls == Counter({"HeadObject": 1})
    assert s3.get_object(Bucket=BUCKET, Key=_key(instance))["Body"].read() == b"other writer"


def test_the_fast_path_still_sends_the_checksum_the_server_verifies(s3: Any) -> None:
    import base64

    dest = _dest()
    instance = _instance(44)
    dest.has_identities([_identity(instance)])
    sent: list[str] = []
    dest._client.meta.events.register(
        "request-created.s3.PutObject", lambda request, **kw: sent.append(str(request.headers["x-amz-checksum-sha256"]))
    )
    assert dest.store(instance) == "stored"
    assert sent == [base64.b64encode(hashlib.sha256(instance.data).digest()).decode()]


def test_the_connection_pool_holds_every_worker_and_the_destination_pool(s3: Any) -> None:
    """Fewer connections than callers: urllib3 discards the extras ("pool is full") and reconnects."""
    from copydicom.endpoints.s3 import ENDPOINT
    from copydicom.registry import BuildContext

    assert _dest()._client.meta.config.max_pool_connections == 16  # max(10, 2 * max_concurrency 8)
    config = S3Config.from_mapping("archive", {"bucket": BUCKET, "region": "us-east-1", "max_concurrency": 4},
                                   where="destinations.archive")
    assert ENDPOINT.destination is not None
    built = ENDPOINT.destination(config, BuildContext(pool_size=34))
    assert isinstance(built, S3Destination)
    assert built._client.meta.config.max_pool_connections == 38  # 34 callers + 4 of its own


def _signed_bodies(dest: S3Destination) -> dict[str, list[tuple[str, str | None, bytes]]]:
    """Per operation, ``(x-amz-content-sha256, x-amz-checksum-sha256, body)`` of each signed request sent."""
    sent: dict[str, list[tuple[str, str | None, bytes]]] = {}

    def record(request: Any, **kw: Any) -> None:
        operation = kw["event_name"].rsplit(".", 1)[1]
        body = request.body
        if hasattr(body, "read"):  # a file-like body: read it, then rewind for the real send
            position = body.tell()
            body, _ = body.read(), body.seek(position)
        headers = {k.lower(): v.decode() if isinstance(v, bytes) else v for k, v in request.headers.items()}
        sent.setdefault(operation, []).append(
            (headers["x-amz-content-sha256"], headers.get("x-amz-checksum-sha256"), bytes(body or b"")))

    dest._client.meta.events.register("before-send.s3", record)
    return sent


@pytest.mark.parametrize("sign_payload", [False, True])
def test_over_plain_http_an_upload_body_is_hashed_once(s3: Any, sign_payload: bool) -> None:
    """Default: uploads sign their checksum header, not the body's SHA-256 again; other requests are as before."""
    dest = _dest(endpoint_url="http://s3.amazonaws.com", sign_payload=sign_payload, multipart_threshold_mb=5,
                 multipart_chunk_mb=5)
    sent = _signed_bodies(dest)
    small = _instance(60)
    large = Instance(InstanceRef("src-61"), to_bytes(ct_dataset(1, 0, 1, 61, rows=2048, cols=1400)))  # 2 parts
    assert dest.has_identities([_identity(small)]) == set()
    assert dest.store(small) == "stored" and dest.store(large) == "stored"
    for operation in ("PutObject", "UploadPart"):
        for content_sha256, checksum, body in sent[operation]:
            assert checksum == base64.b64encode(hashlib.sha256(body).digest()).decode()
            assert content_sha256 == (hashlib.sha256(body).hexdigest() if sign_payload else "UNSIGNED-PAYLOAD")
    assert len(sent["UploadPart"]) == 2
    for operation in ("HeadObject", "CompleteMultipartUpload", "CreateMultipartUpload"):
        for content_sha256, _, body in sent.get(operation, []):
            assert content_sha256 == hashlib.sha256(body).hexdigest(), operation
    assert sent["CompleteMultipartUpload"] and (sent.get("HeadObject") or sent.get("ListObjectsV2"))
    assert s3.get_object(Bucket=BUCKET, Key=_key(large))["Body"].read() == large.data


def test_sign_payload_is_a_known_key() -> None:
    config = S3Config.from_mapping("a", {"bucket": BUCKET, "sign_payload": True}, where="destinations.a")
    assert config.sign_payload and not S3Config.from_url(f"s3://{BUCKET}/").sign_payload
    assert S3Config.from_url(f"s3://{BUCKET}/?sign_payload=true").sign_payload
