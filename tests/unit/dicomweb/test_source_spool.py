"""The DICOMweb source's series retrieval with a fake client: parts served as they arrive, fallbacks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from copydicom.endpoints.dicomweb import DicomwebConfig
from copydicom.endpoints.dicomweb._multipart import Part
from copydicom.endpoints.dicomweb._source import DicomwebSource
from copydicom.model import Identity, InstanceRef
from tests.support.synthetic import ct_dataset, to_bytes


class FakeClient:
    """Serves one series of ``n`` instances; ``drop`` are missing from the series reply."""

    def __init__(self, n: int, drop: set[int] = frozenset()) -> None:  # type: ignore[assignment]
        self.config = DicomwebConfig(name="fake", url="http://127.0.0.1:1/dw")
        self.name = "fake"
        self.files = [to_bytes(ct_dataset(0, 0, 0, i, rows=4, cols=4, seed="spool")) for i in range(n)]
        self.uids = [str(ct_dataset(0, 0, 0, i, rows=4, cols=4, seed="spool").SOPInstanceUID) for i in range(n)]
        self.drop = drop
        self.requests: list[int] = []
        self.lock = threading.Lock()

    @contextmanager
    def retrieve(self, *segments: str) -> Iterator[Iterator[Part]]:
        with self.lock:
            self.requests.append(len(segments))
        if len(segments) == 6:  # one instance
            index = self.uids.index(segments[5])
            yield iter([Part({}, self.files[index])])
        else:
            yield iter([Part({}, f) for i, f in reversed(list(enumerate(self.files))) if i not in self.drop])

    def close(self) -> None:
        pass


def refs(client: FakeClient) -> list[InstanceRef]:
    ds = ct_dataset(0, 0, 0, 0, rows=4, cols=4, seed="spool")
    out = []
    for uid in client.uids:
        identity = Identity(str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), uid)
        out.append(InstanceRef(identity.orthanc_id, None, identity))
    return out


def test_series_parts_in_any_order_are_served_and_missing_ones_fetched_alone() -> None:
    client = FakeClient(6, drop={2})
    source = DicomwebSource(client)  # type: ignore[arg-type]
    got: dict[int, bytes] = {}

    def worker(i: int, ref: InstanceRef) -> None:
        got[i] = source.fetch(ref)

    threads = [threading.Thread(target=worker, args=(i, r)) for i, r in enumerate(refs(client))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    source.close()
    assert [got[i] for i in range(6)] == client.files  # the very bytes, whatever the reply's order
    assert client.requests.count(4) == 1 and client.requests.count(6) == 1  # one series request, one fallback


def test_sparse_top_up_asks_per_instance() -> None:
    client = FakeClient(6)
    source = DicomwebSource(client)  # type: ignore[arg-type]
    all_refs = refs(client)
    key = (all_refs[0].identity.study_uid, all_refs[0].identity.series_uid)  # type: ignore[union-attr]
    source._listed[key] = 6
    source.will_fetch(all_refs[:2])  # 2 of 6: sparse
    assert source.fetch(all_refs[0]) == client.files[0]
    assert client.requests == [6]
    source.will_fetch(all_refs)  # all of them: the series is retrieved (and prefetched at once)
    assert source.fetch(all_refs[5]) == client.files[5]
    assert client.requests == [6, 4]
    source.close()


def test_evicted_series_spool_is_closed_and_fetches_still_succeed() -> None:
    client = FakeClient(3)
    source = DicomwebSource(client, spools=1)  # type: ignore[arg-type]
    r = refs(client)
    assert source.fetch(r[0]) == client.files[0]
    key = (r[0].identity.study_uid, r[0].identity.series_uid)  # type: ignore[union-attr]
    first = source._spools[key]
    other = Identity("X", "9.9", "9.9.9", "9.9.9.9")
    with source._lock:  # another series takes the only slot
        source._open_spool((other.study_uid, other.series_uid))
    assert first.cancelled and key not in source._spools
    assert source.fetch(r[1]) == client.files[1]  # retrieved again, never read from the closed file
    source.close()
