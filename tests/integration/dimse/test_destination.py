"""The C-STORE destination against real peers: Orthanc's DICOM port, dcmtk storescp, a pynetdicom SCP."""

from __future__ import annotations

import io
import logging
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEG2000Lossless, RLELossless
from pynetdicom import AE, evt
from pynetdicom.dsutils import decode
from pynetdicom.events import Event
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from copydicom.endpoints.dimse import DimseConfig
from copydicom.endpoints.dimse.listener import identity_of
from copydicom.endpoints.dimse.scu import DimseDestination, associate, make_ae, read_file_meta
from copydicom.errors import DestinationUnavailable, RejectedByDestination
from copydicom.ledger import Ledger
from copydicom.model import Instance, InstanceRef
from copydicom.pipeline import Pipeline
from tests.integration.dimse.conftest import new_instance_changes, write_files
from tests.support.dcmtk import StoreSCP
from tests.support.listen import REPO_ROOT
from tests.support.orthanc import OrthancServer, free_port


class MemorySource:
    name = "memory"

    def __init__(self, files: list[Path]) -> None:
        self.data = {}
        for f in files:
            raw = f.read_bytes()
            self.data[identity_of(raw).orthanc_id] = raw

    def refs(self) -> list[InstanceRef]:
        return [InstanceRef(k, identity=identity_of(v)) for k, v in self.data.items()]

    def fetch(self, ref: InstanceRef) -> bytes:
        return self.data[ref.source_id]


def instance(path: Path) -> Instance:
    raw = path.read_bytes()
    identity = identity_of(raw)
    return Instance(InstanceRef(identity.orthanc_id, identity=identity), raw, identity=identity)


def node(port: int, aet: str = "PEER", **query: str) -> DimseConfig:
    extra = "".join(f"&{k}={v}" for k, v in query.items())
    return DimseConfig.from_url(f"dicom://{aet}@127.0.0.1:{port}?calling=COPYDICOM{extra}", name="peer")


def test_pipeline_to_orthanc_one_association_per_worker_and_cfind_dedupe(tmp_path: Path, dest: OrthancServer) -> None:
    files = write_files(tmp_path / "in", 30)
    source = MemorySource(files)
    destination = DimseDestination(node(dest.dicom_port, "DEST", dedupe="cfind"))
    ledger = Ledger(tmp_path / "state.db")
    pipeline = Pipeline("to-dicom", source, [], [destination], ledger, quarantine_dir=tmp_path / "q", workers=3)
    try:
        summary = pipeline.run([source.refs()])
        assert summary.counts["stored"] == 30, summary.line()
        assert set(dest.instance_ids()) == set(source.data)
        # 3 workers + the planning thread's C-FIND association: never one per instance.
        assert destination.associations <= 4
        # C-FIND at IMAGE level finds what the peer holds, not what it does not.
        held = destination.has_identities(ref.identity for ref in source.refs() if ref.identity)
        assert held == set(source.data)
        other = write_files(tmp_path / "other", 2, seed="not-sent")
        assert destination.has_identities(identity_of(f.read_bytes()) for f in other) == set()
    finally:
        pipeline.close()
        destination.close()
        ledger.close()
    # A new run with an empty ledger asks the peer (C-FIND) and sends nothing again.
    ledger = Ledger(tmp_path / "fresh.db")
    destination = DimseDestination(node(dest.dicom_port, "DEST", dedupe="cfind"))
    pipeline = Pipeline("to-dicom", source, [], [destination], ledger, quarantine_dir=tmp_path / "q", workers=2)
    try:
        again = pipeline.run([source.refs()])
        assert again.counts["existing"] == 30 and again.counts["stored"] == 0
    finally:
        pipeline.close()
        destination.close()
        ledger.close()


@pytest.fixture
def storescp(tmp_path: Path) -> Iterator[StoreSCP]:
    with StoreSCP(folder=tmp_path / "received") as scp:
        yield scp


def compressed(tmp_path: Path, syntax: str, name: str) -> Path:
    (f,) = write_files(tmp_path / f"src-{name}", 1, seed=name)
    ds = dcmread(f)
    ds.compress(syntax, generate_instance_uid=False)
    out = tmp_path / f"{name}.dcm"
    ds.save_as(out, enforce_file_format=True)
    return out


class IdlessSource(MemorySource):
    """A source that lists instances by ID only, without UIDs (as Orthanc does unless asked for identities)."""

    def refs(self) -> list[InstanceRef]:
        return [InstanceRef(k) for k in self.data]


def run_once(tmp_path: Path, source: MemorySource, destination: DimseDestination, ledger_name: str) -> dict[str, int]:
    ledger = Ledger(tmp_path / ledger_name)
    pipeline = Pipeline("to-dicom", source, [], [destination], ledger, quarantine_dir=tmp_path / "q", workers=2)
    try:
        return dict(pipeline.run([source.refs()]).counts)
    finally:
        pipeline.close()
        destination.close()
        ledger.close()


def test_cfind_dedupe_holds_for_a_source_that_lists_no_uids(tmp_path: Path, dest: OrthancServer) -> None:
    """Review finding: with refs lacking UIDs the plan cannot ask, so each worker asks before its C-STORE."""
    source = IdlessSource(write_files(tmp_path / "in", 12))
    first = run_once(tmp_path, source, DimseDestination(node(dest.dicom_port, "DEST", dedupe="cfind")), "a.db")
    assert first["stored"] == 12
    changes = new_instance_changes(dest)
    again = run_once(tmp_path, source, DimseDestination(node(dest.dicom_port, "DEST", dedupe="cfind")), "b.db")
    assert again.get("existing") == 12 and again.get("stored", 0) == 0
    assert new_instance_changes(dest) == changes  # nothing was sent again


def test_a_peer_refusing_cfind_logs_the_fallback_once_and_the_ledger_decides(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Orthanc with AllowFind false for our AE aborts the C-FIND: one warning, then C-STORE as usual."""
    refusing = OrthancServer(name="DEST", workdir=tmp_path / "orthanc", extra={"DicomModalities": {
        "copydicom": {"AET": "COPYDICOM", "Host": "127.0.0.1", "Port": 104, "AllowFind": False}}})
    refusing.start()
    try:
        for label, source in (("idless", IdlessSource(write_files(tmp_path / "a", 6, seed="a"))),
                              ("with-uids", MemorySource(write_files(tmp_path / "b", 6, seed="b")))):
            caplog.clear()
            with caplog.at_level(logging.WARNING, logger="copydicom.endpoints.dimse.scu"):
                counts = run_once(tmp_path, source, DimseDestination(
                    node(refusing.dicom_port, "DEST", dedupe="cfind")), f"{label}.db")
            assert counts.get("stored") == 6
            fallbacks = [r for r in caplog.records if "dedupe by C-FIND unavailable" in r.getMessage()]
            assert len(fallbacks) == 1
        assert int(refusing.statistics()["CountInstances"]) == 12
    finally:
        refusing.stop()


def test_storescp_receives_uncompressed_as_sent(tmp_path: Path, storescp: StoreSCP) -> None:
    files = write_files(tmp_path / "in", 8)
    destination = DimseDestination(node(storescp.port, "STORESCP", dedupe="cfind"))
    try:
        # storescp has no C-FIND: dedupe falls back to the ledger alone, and says so.
        assert destination.has_identities([identity_of(files[0].read_bytes())]) == set()
        for f in files:
            assert destination.store(instance(f)) == "stored"
        assert destination.associations == 2 and destination.transcoded == 0  # C-FIND's, then one for all stores
    finally:
        destination.close()
    received = storescp.files()
    assert {dcmread(p).SOPInstanceUID for p in received} == {dcmread(f).SOPInstanceUID for f in files}
    for p in received:
        assert dcmread(p).file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)


def test_transcodes_only_when_the_peer_accepts_none_of_the_original(tmp_path: Path, storescp: StoreSCP) -> None:
    rle = compressed(tmp_path, RLELossless, "rle")
    destination = DimseDestination(node(storescp.port, "STORESCP"))  # storescp: uncompressed only
    try:
        assert destination.store(instance(rle)) == "stored"
        assert destination.transcoded == 1
    finally:
        destination.close()
    (received,) = storescp.files()
    got, sent = dcmread(received), dcmread(rle)
    assert got.SOPInstanceUID == sent.SOPInstanceUID  # decompressed, not a new instance
    assert not got.file_meta.TransferSyntaxUID.is_compressed
    assert (got.pixel_array == sent.pixel_array).all()


def test_a_peer_accepting_the_original_gets_it_untouched(tmp_path: Path) -> None:
    j2k = compressed(tmp_path, JPEG2000Lossless, "j2k")
    with StoreSCP(folder=tmp_path / "all", accept_all=True) as scp:
        destination = DimseDestination(node(scp.port, "STORESCP"))
        try:
            assert destination.store(instance(j2k)) == "stored"
            assert destination.transcoded == 0
        finally:
            destination.close()
        (received,) = scp.files()
    assert dcmread(received).file_meta.TransferSyntaxUID == JPEG2000Lossless
    assert dcmread(received).PixelData == dcmread(j2k).PixelData


def test_what_pydicom_cannot_decompress_is_quarantined_with_the_reason(tmp_path: Path, storescp: StoreSCP) -> None:
    rle = compressed(tmp_path, RLELossless, "broken")
    ds = dcmread(rle)
    ds.PixelData = b"\xfe\xff\x00\xe0\x00\x00\x00\x00" + b"\xfe\xff\x00\xe0\x08\x00\x00\x00" + b"garbage!" + \
        b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    ds.save_as(rle, enforce_file_format=True)
    destination = DimseDestination(node(storescp.port, "STORESCP"))
    try:
        with pytest.raises(RejectedByDestination, match="cannot decompress"):
            destination.store(instance(rle))
    finally:
        destination.close()
    assert storescp.files() == []


class ScriptedSCP:
    """A pynetdicom C-STORE SCP answering statuses from a script, or aborting the association."""

    def __init__(self, script: list[int | str], *, calling: list[str] | None = None,
                 syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)) -> None:
        self.script = list(script)
        self.received = 0
        self.datasets: list[tuple[str, bytes]] = []  # (transfer syntax, data set bytes as received)
        self.port = free_port()
        self.ae = AE(ae_title="SCRIPTED")
        self.ae.add_supported_context(CTImageStorage, list(syntaxes))
        if calling:
            self.ae.require_calling_aet = calling
        self._lock = threading.Lock()

    def _store(self, event: Event) -> int:
        with self._lock:
            step = self.script.pop(0) if self.script else 0
            self.received += 1
            self.datasets.append((str(event.context.transfer_syntax), event.request.DataSet.getvalue()))
        if step == "abort":
            event.assoc.abort()
            return 0
        return int(step)

    def __enter__(self) -> ScriptedSCP:
        self.ae.start_server(("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)])
        return self

    def __exit__(self, *exc: object) -> None:
        self.ae.shutdown()


def out_of_order(path: Path) -> bytes:
    """Rewrite the file with Manufacturer after the pixel data (explicit VR LE), which any decode and
    re-encode would put back in tag order: only a send of the original bytes keeps them."""
    ds = dcmread(path)
    ds.Manufacturer = "ACME"
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    for elem in sorted(ds, key=lambda e: (e.tag == 0x00080070, e.tag)):
        write_data_element(body, elem)
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, ds.file_meta, enforce_standard=True)
    path.write_bytes(head.getvalue() + body.getvalue())
    return path.read_bytes()


def test_the_original_bytes_are_sent_when_the_peer_accepts_their_syntax(tmp_path: Path) -> None:
    files = write_files(tmp_path / "in", 2)
    raws = [out_of_order(f) for f in files]
    with ScriptedSCP([]) as scp:
        destination = DimseDestination(node(scp.port, "SCRIPTED"))
        try:
            for f in files:
                assert destination.store(instance(f)) == "stored"
        finally:
            destination.close()
    assert [data for _, data in scp.datasets] == [raw[read_file_meta(raw).offset:] for raw in raws]
    assert {syntax for syntax, _ in scp.datasets} == {ExplicitVRLittleEndian}


def test_a_peer_accepting_only_implicit_vr_gets_a_converted_data_set(tmp_path: Path) -> None:
    (f,) = write_files(tmp_path / "in", 1)
    out_of_order(f)
    with ScriptedSCP([], syntaxes=(ImplicitVRLittleEndian,)) as scp:
        destination = DimseDestination(node(scp.port, "SCRIPTED"))
        try:
            assert destination.store(instance(f)) == "stored"
        finally:
            destination.close()
    ((syntax, data),) = scp.datasets
    assert syntax == ImplicitVRLittleEndian
    got = decode(io.BytesIO(data), True, True)  # a bare implicit VR little endian data set
    assert got.Manufacturer == "ACME" and got.SOPInstanceUID == dcmread(f).SOPInstanceUID
    assert destination.transcoded == 0


def test_associations_turn_off_nagle(tmp_path: Path) -> None:
    """Nagle plus the peer's delayed ACK stalled each C-STORE's last short PDU (up to 40 ms)."""
    with ScriptedSCP([]) as scp:
        ae = make_ae(node(scp.port, "SCRIPTED"))
        ae.add_requested_context(CTImageStorage, [ExplicitVRLittleEndian])
        assoc = associate(ae, node(scp.port, "SCRIPTED"))
        try:
            sock = assoc.dul.socket.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
        finally:
            assoc.release()


def test_status_codes_at_a_real_peer(tmp_path: Path) -> None:
    files = write_files(tmp_path / "in", 5)
    with ScriptedSCP([0xB000, 0xA700, 0xC000, 0xA900, 0x0000]) as scp:
        destination = DimseDestination(node(scp.port, "SCRIPTED"))
        try:
            first = instance(files[0])
            assert destination.store(first) == "stored"
            assert destination.warnings == 1
            assert first.warnings == {"peer": "C-STORE warning 0xB000 (coercion of data elements)"}
            with pytest.raises(DestinationUnavailable, match="0xA700"):
                destination.store(instance(files[1]))
            with pytest.raises(RejectedByDestination, match="0xC000"):
                destination.store(instance(files[2]))
            with pytest.raises(RejectedByDestination, match="0xA900"):
                destination.store(instance(files[3]))
            assert destination.store(instance(files[4])) == "stored"
        finally:
            destination.close()


def test_a_peer_aborting_mid_association_is_retryable_and_the_next_store_reassociates(tmp_path: Path) -> None:
    files = write_files(tmp_path / "in", 3)
    with ScriptedSCP([0, "abort", 0]) as scp:
        destination = DimseDestination(node(scp.port, "SCRIPTED"))
        try:
            assert destination.store(instance(files[0])) == "stored"
            with pytest.raises(DestinationUnavailable):
                destination.store(instance(files[1]))
            assert destination.store(instance(files[1])) == "stored"
            assert destination.associations == 2
        finally:
            destination.close()


def test_refused_and_unreachable_associations_are_retryable(tmp_path: Path) -> None:
    (f,) = write_files(tmp_path / "in", 1)
    with ScriptedSCP([], calling=["SOMEONE"]) as scp:
        destination = DimseDestination(node(scp.port, "SCRIPTED"))
        with pytest.raises(DestinationUnavailable, match=r"rejected \(result 0x01, source 0x01, reason 0x03\)"):
            destination.store(instance(f))
    closed = DimseDestination(node(free_port(), "NOBODY", timeout="2s"))
    with pytest.raises(DestinationUnavailable, match="could not be opened"):
        closed.store(instance(f))


def test_echo_command(dest: OrthancServer) -> None:
    run = [sys.executable, "-m", "copydicom", "echo"]
    env = {"PYTHONPATH": str(REPO_ROOT)}
    ok = subprocess.run(run + [f"dicom://DEST@127.0.0.1:{dest.dicom_port}"], env=env, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and ok.stdout.startswith("echo=ok peer=dicom://DEST@127.0.0.1:") and "status=0x0000" in ok.stdout
    down = subprocess.run(run + [f"dicom://DEST@127.0.0.1:{free_port()}", "--timeout", "2s"], env=env,
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and down.stdout.startswith("echo=failed")
    bad = subprocess.run(run + ["dicom://127.0.0.1:4242"], env=env, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "called AE title" in bad.stderr


def test_warning_statuses_count_as_replicated_and_as_warnings(tmp_path: Path) -> None:
    """0xB000/0xB007/0xB006 from a real peer: delivered (ledger, replicated=) and counted in warnings=."""
    files = write_files(tmp_path / "in", 5)
    source = MemorySource(files)
    ledger = Ledger(tmp_path / "state.db")
    with ScriptedSCP([0xB000, 0x0000, 0xB007, 0xB006, 0x0000]) as scp:
        destination = DimseDestination(node(scp.port, "SCRIPTED"))
        pipeline = Pipeline("to-dicom", source, [], [destination], ledger, quarantine_dir=tmp_path / "q", workers=1)
        try:
            summary = pipeline.run([source.refs()])
        finally:
            pipeline.close()
    try:
        assert summary.counts["stored"] == 5 and summary.warnings == 3, summary.line()
        assert " failed=0 warnings=3 seconds=" in summary.line()
        assert ledger.delivered_among("peer", list(source.data)) == set(source.data)
    finally:
        ledger.close()
