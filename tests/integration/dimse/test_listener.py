"""The C-STORE receiver with real senders: dcmtk storescu, Orthanc's /modalities/{m}/store, pynetdicom."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from copydicom.endpoints.dimse import ListenerConfig
from copydicom.endpoints.dimse.listener import ListenerSource, listener_status
from copydicom.model import orthanc_id
from tests.integration.dimse.conftest import new_instance_changes, wait_until, write_files
from tests.support.dcmtk import storescu
from tests.support.listen import REPO_ROOT, ListenProcess, listener_config
from tests.support.orthanc import OrthancServer, free_port


def orthanc_dest(server: OrthancServer) -> dict[str, dict[str, object]]:
    return {"dest": {"type": "orthanc", "url": server.url, "user": server.user, "password": server.password}}


def expected_ids(files: list[Path]) -> set[str]:
    out = set()
    for f in files:
        ds = dcmread(f, stop_before_pixels=True)
        out.add(orthanc_id(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    return out


def test_storescu_push_is_delivered_and_unknown_callers_are_rejected(tmp_path: Path, dest: OrthancServer) -> None:
    files = write_files(tmp_path / "in", 24)
    port = free_port()
    config = listener_config(tmp_path / "rx", port=port, destinations=orthanc_dest(dest), allowed_calling=["STORESCU"])
    listener = ListenProcess(config, port, verbose=2).start()  # debug logging: still no patient data
    try:
        pushed = storescu(port, files)
        assert pushed.returncode == 0, pushed.stderr
        wait_until(lambda: len(dest.instance_ids()) == 24, what="24 instances at the destination")
        wait_until(lambda: not list((tmp_path / "rx" / "spool").glob("*.dcm")), what="an empty spool")
        assert set(dest.instance_ids()) == expected_ids(files)

        refused = storescu(port, files[:1], calling="INTRUDER")
        assert refused.returncode != 0
        assert "Calling AE Title Not Recognized" in refused.stderr
        assert "Rejected Permanent" in refused.stderr and "Service User" in refused.stderr

        status = subprocess.run([sys.executable, "-m", "copydicom", "listen", "--config", str(config), "--status"],
                                env={"PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "rx: spool_depth=0 oldest=-" in status.stdout
    finally:
        assert listener.stop() == 0
    assert new_instance_changes(dest) == 24  # each sent once
    log = listener.log()
    assert "route received: replicated=" in log
    for f in files[:5]:
        ds = dcmread(f, stop_before_pixels=True)
        for value in (ds.PatientID, str(ds.PatientName), ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID):
            assert value not in log
    assert str(tmp_path / "in") not in log


def test_orthanc_pushes_with_modalities_store(tmp_path: Path, dest: OrthancServer) -> None:
    port = free_port()
    sender = OrthancServer(name="MODALITY", workdir=tmp_path / "sender",
                           modalities={"copydicom": ("COPYDICOM", "127.0.0.1", port)})
    sender.start()
    try:
        files = write_files(tmp_path / "in", 12, seed="orthanc-push")
        ids = [sender.upload(f.read_bytes())["ID"] for f in files]
        config = listener_config(tmp_path / "rx", port=port, destinations=orthanc_dest(dest),
                                 allowed_calling=["MODALITY"])
        listener = ListenProcess(config, port).start()
        try:
            import requests

            reply = requests.post(f"{sender.url}/modalities/copydicom/store", json={"Resources": ids},
                                  auth=sender.auth, timeout=120)
            assert reply.ok, reply.text
            wait_until(lambda: len(dest.instance_ids()) == 12, what="12 instances at the destination")
            assert set(dest.instance_ids()) == set(ids)  # same Orthanc IDs: same patient and UIDs
        finally:
            listener.stop()
    finally:
        sender.cleanup()


def _listener(tmp_path: Path, **body: object) -> ListenerSource:
    cfg = ListenerConfig.from_mapping(
        "rx", {"port": free_port(), "allowed_calling": ["SENDER"], "spool": str(tmp_path / "spool"), **body},
        where="endpoints.rx")
    source = ListenerSource(cfg)
    source.listener.start()
    return source


def _scu(port: int, calling: str = "SENDER") -> object:
    ae = AE(ae_title=calling)
    ae.add_requested_context(CTImageStorage)
    return ae.associate("127.0.0.1", port, ae_title="COPYDICOM")


def test_a_peer_that_aborts_mid_association_loses_only_what_was_not_acknowledged(tmp_path: Path) -> None:
    source = _listener(tmp_path)
    try:
        files = write_files(tmp_path / "in", 5)
        assoc = _scu(source.listener.port)
        assert assoc.is_established  # type: ignore[attr-defined]
        statuses = [assoc.send_c_store(dcmread(f)).Status for f in files[:3]]  # type: ignore[attr-defined]
        assoc.abort()  # type: ignore[attr-defined]
        assert statuses == [0, 0, 0]
        wait_until(lambda: source.listener.stats.aborted_associations == 1, what="the abort to be seen")
        assert {e.key for e in source.spool.entries()} == expected_ids(files[:3])
        again = _scu(source.listener.port)  # the listener still serves
        assert again.send_c_store(dcmread(files[3])).Status == 0  # type: ignore[attr-defined]
        again.release()  # type: ignore[attr-defined]
        stats = listener_status(source.config, source.listener)
        assert stats["spool_depth"] == 4 and stats["instances_received"] == 4 and stats["associations"] == 2
    finally:
        source.close()


def test_rejected_and_refused_counters(tmp_path: Path) -> None:
    source = _listener(tmp_path, allowed_addresses=["127.0.0.1"])
    try:
        assoc = _scu(source.listener.port, calling="STRANGER")
        assert assoc.is_rejected  # type: ignore[attr-defined]
        rj = assoc.acceptor.primitive  # type: ignore[attr-defined]
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x01, 0x01, 0x03)  # PS3.8 Table 9-21
        wait_until(lambda: source.listener.stats.rejected_associations == 1, what="the rejection count")
    finally:
        source.close()
    other = _listener(tmp_path, allowed_addresses=["10.0.0.0/8"])
    try:
        assoc = _scu(other.listener.port)
        assert not assoc.is_established  # type: ignore[attr-defined]
        assert other.listener.stats.refused_addresses == 1 and other.listener.stats.associations == 0
    finally:
        other.close()


@pytest.fixture
def small_disk(tmp_path: Path) -> object:
    """A 1 MiB tmpfs (we run as root in CI; mounted and unmounted by this test)."""
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    assert done.returncode == 0, f"cannot mount a tmpfs (needs root): {done.stderr}"
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_spool_answers_out_of_resources_not_success(tmp_path: Path, small_disk: Path) -> None:
    source = _listener(tmp_path, spool=str(small_disk / "spool"))
    try:
        files = write_files(tmp_path / "in", 40, rows=128)  # ~33 KiB each: the disk fills before the end
        assoc = _scu(source.listener.port)
        statuses = []
        for f in files:
            statuses.append(int(assoc.send_c_store(dcmread(f)).Status))  # type: ignore[attr-defined]
        assoc.release()  # type: ignore[attr-defined]
        ok = [f for f, s in zip(files, statuses) if s == 0]
        failed = [s for s in statuses if s != 0]
        assert failed and all(0xA700 <= s <= 0xA7FF for s in failed)
        assert ok  # some fit
        # Every instance answered Success is complete on the disk; nothing else is there.
        entries = source.spool.entries()
        assert {e.key for e in entries} == expected_ids(ok)
        on_disk = {e.key: e.path.read_bytes() for e in entries}
        for f in ok:
            (key,) = expected_ids([f])
            assert dcmread(f).PixelData == dcmread(source.spool.path_of(key)).PixelData
            assert key in on_disk
        assert not [p for p in (small_disk / "spool").iterdir() if p.name.startswith(".tmp-")]
        assert source.listener.stats.store_failures == len(failed)
    finally:
        source.close()


@pytest.mark.parametrize(
    ("syntax", "option"),
    [("1.2.840.10008.1.2.5", "-xr"), ("1.2.840.10008.1.2.4.90", "-xv"), ("1.2.840.10008.1.2.1.99", "-xd")],
    ids=["rle", "jpeg2000-lossless", "deflated"],
)
def test_instances_are_stored_as_sent(tmp_path: Path, syntax: str, option: str) -> None:
    from pydicom.uid import UID

    source = _listener(tmp_path)
    try:
        (f,) = write_files(tmp_path / "in", 1)
        ds = dcmread(f)
        if UID(syntax).is_compressed:
            ds.compress(syntax, generate_instance_uid=False)
        else:
            ds.file_meta.TransferSyntaxUID = syntax
        ds.save_as(tmp_path / "sent.dcm", enforce_file_format=True)
        pushed = storescu(source.listener.port, [tmp_path / "sent.dcm"], calling="SENDER", propose=(option,))
        assert pushed.returncode == 0, pushed.stderr
        (entry,) = source.spool.entries()
        stored = dcmread(entry.path)
        assert stored.file_meta.TransferSyntaxUID == syntax  # never transcoded on receipt
        assert stored.PixelData == dcmread(tmp_path / "sent.dcm").PixelData
    finally:
        source.close()


def test_a_stalled_sender_does_not_block_others(tmp_path: Path) -> None:
    import socket

    source = _listener(tmp_path, timeout="30s")
    stalled = socket.create_connection(("127.0.0.1", source.listener.port))  # connects, then says nothing
    try:
        files = write_files(tmp_path / "in", 3)
        pushed = storescu(source.listener.port, files, calling="SENDER")
        assert pushed.returncode == 0, pushed.stderr
        assert source.spool.depth()[0] == 3
    finally:
        stalled.close()
        source.close()


def test_associations_beyond_the_limit_are_rejected_transiently(tmp_path: Path) -> None:
    source = _listener(tmp_path, max_associations=1)
    try:
        first = _scu(source.listener.port)
        assert first.is_established  # type: ignore[attr-defined]
        second = _scu(source.listener.port)
        assert second.is_rejected  # type: ignore[attr-defined]
        rj = second.acceptor.primitive  # type: ignore[attr-defined]
        # rejected-transient, service-provider (presentation), local-limit-exceeded (PS3.8 Table 9-21)
        assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
        first.release()  # type: ignore[attr-defined]
    finally:
        source.close()
