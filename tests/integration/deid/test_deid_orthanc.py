"""Round trip through a real Orthanc: one source study -> one de-identified study, stable across runs."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from pydicom import dcmread

from copydicom.model import Identity, Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage, MappingStore
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files

KEY = b"integration-key-0123456789abcdef"


@pytest.fixture(scope="module")
def orthanc() -> Iterator[OrthancServer]:
    with OrthancServer(name="DEIDTEST") as server:
        yield server


def _run(files: list[bytes], store: MappingStore | None) -> list[Instance]:
    stage = DeidStage(DeidProfile.default(), KEY, store)  # a fresh stage: nothing shared but the key
    return [stage.process(Instance(InstanceRef(str(i)), data)) for i, data in enumerate(files)]


def test_one_study_lands_in_one_deidentified_study(orthanc: OrthancServer, tmp_path: Path) -> None:
    files = list(ct_study_files(8, series_per_study=2, rows=32, cols=32, seed="deid-it"))
    source = [Identity.from_dataset(dcmread(io.BytesIO(f))) for f in files]
    store = MappingStore(tmp_path / "state.db")
    first = _run(files, store)
    for inst in first:
        reply = orthanc.upload(inst.data)
        assert inst.identity is not None and reply["ID"] == inst.identity.orthanc_id
    stats = orthanc.statistics()
    assert (stats["CountPatients"], stats["CountStudies"], stats["CountSeries"], stats["CountInstances"]) == (1, 1, 2, 8)
    study = orthanc.get("/studies")[0]
    tags = orthanc.get(f"/studies/{study}")
    predicted = DeidStage(DeidProfile.default(), KEY).transform_identity(source[0])
    assert tags["MainDicomTags"]["StudyInstanceUID"] == predicted.study_uid
    assert tags["PatientMainDicomTags"]["PatientID"] == predicted.patient_id
    # What the dedupe stage would ask the destination, before any download:
    stage = DeidStage(DeidProfile.default(), KEY)
    predicted_ids = {stage.transform_identity(s).orthanc_id for s in source}
    assert predicted_ids == set(orthanc.instance_ids())
    # Second run, new process state: identical UIDs, nothing new in Orthanc.
    second = _run(files, None)
    assert [i.identity for i in second] == [i.identity for i in first]
    assert [i.data for i in second] == [i.data for i in first]
    for inst in second:
        orthanc.upload(inst.data)
    assert orthanc.statistics()["CountInstances"] == 8
    # Orthanc reads back the de-identified markers and no source identifier.
    one = orthanc.get(f"/instances/{orthanc.instance_ids()[0]}/simplified-tags")
    assert one["PatientIdentityRemoved"] == "YES"
    assert one["PatientName"] == predicted.patient_id
    assert "SYN" not in one["PatientID"] and one["StudyInstanceUID"].startswith("2.25.")
    raw = requests.get(f"{orthanc.url}/instances/{orthanc.instance_ids()[0]}/file", auth=orthanc.auth, timeout=30)
    assert source[0].patient_id.encode() not in raw.content
    assert source[0].study_uid.encode() not in raw.content
    exported = store.export(tmp_path / "map")
    store.close()
    lines = exported["uid"].read_text().splitlines()
    assert lines[0] == "id_old,id_new"
    assert f"{source[0].study_uid},{predicted.study_uid}" in lines
    assert len(lines) == 1 + 8 + 2 + 1 + 1  # SOPs, series, study, frame of reference
