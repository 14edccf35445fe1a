"""DICOMweb pieces without a server: multipart reader/writer, STOW-RS outcomes, batching, config."""

from __future__ import annotations

import io
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copydicom.endpoints.dicomweb import DicomwebConfig, parse_duration
from copydicom.endpoints.dicomweb._destination import StowDestination, stow_outcomes, stow_warnings
from copydicom.endpoints.dicomweb._multipart import MultipartBody, MultipartReader, boundary_of
from copydicom.errors import ConfigError, DestinationUnavailable, RejectedByDestination
from copydicom.model import Identity, Instance, InstanceRef


def chunked(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@settings(max_examples=60, deadline=None)
@given(
    parts=st.lists(st.binary(min_size=0, max_size=3000), min_size=1, max_size=6),
    chunk=st.integers(min_value=1, max_value=4096),
    with_length=st.booleans(),
    as_read=st.booleans(),
)
def test_writer_and_reader_round_trip_any_chunking(parts: list[bytes], chunk: int, with_length: bool,
                                                    as_read: bool) -> None:
    body = MultipartBody(parts)
    raw = b"".join(body)
    assert len(raw) == len(body)
    if not with_length:  # a server that sends no Content-Length per part: the reader scans
        raw = raw.replace(b"Content-Length: ", b"X-Ignored: ")
    if as_read:  # a read(n) function that returns at most `chunk` bytes per call, as sockets do
        stream = io.BytesIO(raw)
        got = list(MultipartReader(lambda n: stream.read(min(n, chunk)), boundary_of(body.content_type)))
    else:
        got = list(MultipartReader(chunked(raw, chunk), boundary_of(body.content_type)))
    assert [p.body for p in got] == parts
    assert all(p.headers["content-type"] == "application/dicom" for p in got)


def test_reader_handles_preamble_padding_and_a_lying_length() -> None:
    raw = (
        b"preamble\r\n--b1  \r\nContent-Type: application/dicom\r\nContent-Length: 3\r\n\r\nabcdef"
        b"\r\n--b1\r\n\r\nxyz\r\n--b1--\r\nepilogue"
    )
    parts = list(MultipartReader(chunked(raw, 5), b"b1"))
    assert [p.body for p in parts] == [b"abcdef", b"xyz"]
    stream = io.BytesIO(raw)
    assert [p.body for p in MultipartReader(stream.read, b"b1")] == [b"abcdef", b"xyz"]


def test_reader_refuses_a_truncated_stream() -> None:
    raw = b"--b1\r\nContent-Type: application/dicom\r\n\r\nabc"
    with pytest.raises(ValueError):
        list(MultipartReader([raw], b"b1"))


def test_boundary_of() -> None:
    assert boundary_of('multipart/related; type="application/dicom"; boundary="a-b"') == b"a-b"
    assert boundary_of("multipart/related; boundary=xyz; type=application/dicom") == b"xyz"
    with pytest.raises(ValueError):
        boundary_of("application/dicom")


def _sop(uid: str, **extra: Any) -> dict[str, Any]:
    item: dict[str, Any] = {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
                            "00081155": {"vr": "UI", "Value": [uid]}}
    for tag, value in extra.items():
        item[tag] = {"vr": "US", "Value": [value]}
    return item


def stow_body(stored: list[dict[str, Any]], failed: list[dict[str, Any]]) -> dict[str, Any]:
    return {"00081199": {"vr": "SQ", "Value": stored}, "00081198": {"vr": "SQ", "Value": failed}}


def test_stow_outcomes_read_the_response_per_instance() -> None:
    body = stow_body(
        [_sop("1.1"), _sop("1.2", **{"00081196": 0xB000})],
        [_sop("1.3", **{"00081197": 0xA900}), _sop("1.4", **{"00081197": 0xA700}), _sop("1.5", **{"00081197": 0x0111})],
    )
    out = stow_outcomes(202, body, ["1.1", "1.2", "1.3", "1.4", "1.5", "1.6"])
    assert out[0] == "stored" and out[1] == "stored"
    assert isinstance(out[2], RejectedByDestination) and "A900H" in str(out[2])
    assert isinstance(out[3], DestinationUnavailable)
    assert out[4] == "existing"
    assert out[5] is None
    assert stow_outcomes(200, None, ["1.1"]) == [None]
    assert stow_outcomes(200, [body], ["1.1"]) == ["stored"]


class FakeStowClient:
    """Speaks like a STOW-RS server: fails the SOP UIDs in ``bad``; a 400 lists only the good ones."""

    def __init__(self, bad: set[str], *, orthanc_style: bool = False, warn: dict[str, int] | None = None) -> None:
        self.config = DicomwebConfig(name="fake", url="http://127.0.0.1:1/dw", stow_linger=5)
        self.name = "fake"
        self.bad = bad
        self.warn = warn or {}
        self.orthanc_style = orthanc_style
        self.requests: list[int] = []
        self.lock = threading.Lock()

    def stow(self, parts: list[bytes]) -> tuple[int, Any]:
        with self.lock:
            self.requests.append(len(parts))
        uids = [p.split(b"\0")[0].decode() for p in parts]
        good = [_sop(u, **({"00081196": self.warn[u]} if u in self.warn else {})) for u in uids if u not in self.bad]
        if self.orthanc_style:
            return (400 if len(good) < len(uids) else 200), stow_body(good, [])
        failed = [_sop(u, **{"00081197": 0xC000}) for u in uids if u in self.bad]
        return (202 if failed or self.warn else 200), stow_body(good, failed)

    def close(self) -> None:
        pass


def instance(uid: str) -> Instance:
    identity = Identity("P", "1", "2", uid)
    return Instance(InstanceRef(identity.orthanc_id, None, identity), uid.encode(), identity=identity)


@pytest.mark.parametrize("orthanc_style", [False, True])
def test_group_commit_batches_workers_and_quarantines_exactly_the_failed_one(orthanc_style: bool) -> None:
    client = FakeStowClient({"9.3"}, orthanc_style=orthanc_style)
    dest = StowDestination(client, concurrency=8)  # type: ignore[arg-type]  # batches of half the workers: 4
    results: dict[str, Any] = {}
    barrier = threading.Barrier(4)

    def worker(uid: str) -> None:
        barrier.wait()
        try:
            results[uid] = dest.store(instance(uid))
        except Exception as exc:  # noqa: BLE001
            results[uid] = exc

    threads = [threading.Thread(target=worker, args=(f"9.{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert client.requests[0] == 4  # one request for the four arriving workers
    assert {u: r for u, r in results.items() if not isinstance(r, Exception)} == {"9.0": "stored", "9.1": "stored",
                                                                                 "9.2": "stored"}
    assert isinstance(results["9.3"], RejectedByDestination)
    if orthanc_style:  # the 400 did not say which: each unmentioned instance was sent alone
        assert client.requests == [4, 1]


def test_a_lone_worker_does_not_wait_for_a_full_batch() -> None:
    client = FakeStowClient(set())
    client.config = DicomwebConfig(name="fake", url="http://127.0.0.1:1/dw", stow_linger=0)
    dest = StowDestination(client, concurrency=4)  # type: ignore[arg-type]
    assert dest.store(instance("7.1")) == "stored"
    assert client.requests == [1]


def test_stow_warnings_read_the_warning_reason_per_instance() -> None:
    body = stow_body([_sop("1.1"), _sop("1.2", **{"00081196": 0xB007})], [_sop("1.3", **{"00081197": 0xA900})])
    assert stow_warnings(body) == {"1.2": 0xB007}
    assert stow_warnings([body]) == {"1.2": 0xB007}
    assert stow_warnings(None) == {} and stow_warnings(stow_body([_sop("1.1")], [])) == {}


def test_a_stored_with_warning_instance_is_stored_and_carries_the_warning() -> None:
    client = FakeStowClient(set(), warn={"8.2": 0xB000})
    client.config = DicomwebConfig(name="fake", url="http://127.0.0.1:1/dw", stow_linger=0)
    dest = StowDestination(client, concurrency=1)  # type: ignore[arg-type]
    plain, warned = instance("8.1"), instance("8.2")
    assert dest.store(plain) == "stored" and dest.store(warned) == "stored"
    assert plain.warnings == {}
    assert list(warned.warnings) == ["fake"] and "B000H" in warned.warnings["fake"]
    assert "8.2" not in warned.warnings["fake"]  # the reason names the code, never the UID


def test_size_bound_splits_batches() -> None:
    client = FakeStowClient(set())
    client.config = DicomwebConfig(name="fake", url="http://127.0.0.1:1/dw", stow_max_bytes=1024, stow_linger=0.2)
    dest = StowDestination(client, concurrency=4)  # type: ignore[arg-type]  # batches of 2 but for the bound
    results: list[Any] = []

    def worker(uid: str) -> None:
        big = Instance(InstanceRef(uid), uid.encode() + b"\0" * 800, identity=Identity("P", "1", "2", uid))
        results.append(dest.store(big))

    threads = [threading.Thread(target=worker, args=(f"1.{i}",)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert results == ["stored", "stored"]
    assert client.requests == [1, 1]  # 2 x 800 bytes would pass the 1024-byte bound: two requests


def test_config_url_forms_and_errors() -> None:
    cfg = DicomwebConfig.from_url("dicomweb+https://me:s%40cret@pacs.example:8443/dicom-web/?retrieve=instance")
    assert cfg.url == "https://pacs.example:8443/dicom-web"
    assert (cfg.user, cfg.password, cfg.retrieve) == ("me", "s@cret", "instance")
    assert "s@cret" not in cfg.display_url and "s@cret" not in repr(cfg)
    assert DicomwebConfig.from_url("dicomweb+http://127.0.0.1:8042/dicom-web").url == "http://127.0.0.1:8042/dicom-web"
    with pytest.raises(ConfigError, match="unknown option"):
        DicomwebConfig.from_url("dicomweb+http://h/dw?bogus=1")
    with pytest.raises(ConfigError, match=r"endpoints\.pacs\.retrieve"):
        DicomwebConfig.from_mapping("pacs", {"type": "dicomweb", "url": "http://h/dw", "retrieve": "all"},
                                    where="endpoints.pacs")
    with pytest.raises(ConfigError, match="unknown key"):
        DicomwebConfig.from_mapping("pacs", {"url": "http://h/dw", "passwd": "x"}, where="endpoints.pacs")
    with pytest.raises(ConfigError, match="not both"):
        DicomwebConfig.from_mapping("pacs", {"url": "http://h/dw", "password": "a", "token": "b"},
                                    where="endpoints.pacs")


def test_token_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DW_TOKEN", "t0k")
    cfg = DicomwebConfig.from_mapping("pacs", {"url": "https://h/dw", "token": "${DW_TOKEN}"}, where="endpoints.pacs")
    assert cfg.token == "t0k"
    assert "t0k" not in repr(cfg)


def test_durations() -> None:
    assert parse_duration("2h", where="w") == 7200
    assert parse_duration("30s", where="w") == 30
    with pytest.raises(ConfigError, match="trigger.qido.window"):
        parse_duration("2 hours", where="trigger.qido.window")
