"""Issue 16, dose: exposure time from both codes, every kVp/mA/pulse row, TID 10021 administrations
and organ doses, QA/phantom detection from patterns with the reason."""

from __future__ import annotations

from typing import Any

import pytest

from copydicom.stages.dose import extract_dose
from tests.unit.dose import builder as b


def _events(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["doc_type"] == "irradiation_event"]


@pytest.mark.parametrize("code,value,unit,ms", [
    (b.EXPOSURE_TIME_RETIRED, "120", "ms", 120.0),
    (b.EXPOSURE_TIME_CURRENT, "120", "ms", 120.0),
    (b.EXPOSURE_TIME_CURRENT, "0.25", "s", 250.0),
])
def test_projection_exposure_time_from_both_codes(code: b.Code, value: str, unit: str, ms: float) -> None:
    ev = b.xray_event("1.2.3.900", extra=[b.num(code, value, unit)])
    [e] = _events(extract_dose(b.projection_report([ev], [])))
    p = e["projection"]
    assert p["exposure_time_ms"] == ms
    assert p["raw"]["exposure_time_ms"] == {"value": value, "unit": unit, "code": code[0]}


def test_every_kvp_ma_and_pulse_row_of_an_event() -> None:
    rows = [b.num(b.KVP, "81", "kV"), b.num(b.KVP, "82", "kV"), b.num(b.MA, "10", "mA"), b.num(b.MA, "12", "mA"),
            b.num(b.MA, "0.014", "A"), b.num(b.PULSE_WIDTH, "9", "ms")]
    ev = b.xray_event("1.2.3.901", kvp="80", extra=rows)
    [e] = _events(extract_dose(b.projection_report([ev], [])))
    p = e["projection"]
    assert p["kvp_kv"] == 80.0 and p["kvp_kv_values"] == [80.0, 81.0, 82.0]
    assert p["tube_current_ma_values"] == [10.0, 12.0, 14.0]
    assert p["pulse_width_ms_values"] == [8.0, 9.0]
    assert p["raw"]["kvp_kv_values"][1] == {"value": "81", "unit": "kV"}
    single = _events(extract_dose(b.projection_report([b.xray_event("1.2.3.902")], [])))[0]["projection"]
    assert "kvp_kv_values" not in single  # one row: the scalar says it all


def test_radiopharmaceutical_events_per_administration_with_organ_doses() -> None:
    first = b.administration("1.2.3.910", "370", effective="7.0", start="20240131101500", organs=[
        b.organ_dose(b.BLADDER, "45.5"),
        b.organ_dose(b.KIDNEY, "0.012", unit="Gy", laterality=("24028007", "SCT", "Right")),
    ])
    second = b.administration("1.2.3.911", "185")
    docs = extract_dose(b.rrdsr_multi([first, second]))
    events = _events(docs)
    assert [e["_id"] for e in events] == ["1.2.3.910", "1.2.3.911"]
    assert [e["event"]["index"] for e in events] == [0, 1]
    assert events[0]["event"]["type"]["concept"] == "DCM:113502"
    rp = events[0]["radiopharmaceutical"]
    assert rp["administered_activity_mbq"] == 370.0 and rp["effective_dose_msv"] == 7.0
    assert rp["start"] == "2024-01-31T10:15:00"
    organs = rp["organ_doses"]
    assert [o["organ"]["concept"] for o in organs] == ["SCT:89837001", "SCT:64033007"]
    assert [o["dose_mgy"] for o in organs] == [45.5, 12.0]
    assert organs[1]["laterality"] == "right" and organs[1]["raw"]["dose_mgy"] == {"value": "0.012", "unit": "Gy"}
    assert organs[0]["reference_authority"]["code"] == "113523"
    assert events[1]["radiopharmaceutical"]["administered_activity_mbq"] == 185.0
    assert events[1]["radiopharmaceutical"]["organ_doses"] == []
    summary = docs[-1]
    assert summary["totals"]["event_count"] == 2 and summary["events_extracted"] == 2
    assert len(summary["radiopharmaceutical_administrations"]) == 2


@pytest.mark.parametrize("attrs,reason", [
    ({"PatientID": "QA1234"}, "PatientID matches the QA/phantom pattern 'qa'"),
    ({"PatientID": "PHANTOM_01"}, "PatientID matches the QA/phantom pattern 'phantom'"),
    ({"PatientID": "qc-ct2"}, "PatientID matches the QA/phantom pattern 'qc'"),
    ({"patient_name": "TEST^PATIENT"}, "PatientName matches the QA/phantom pattern 'test'"),
    ({"study_description": "CT Quality Control"}, "StudyDescription matches the QA/phantom pattern 'quality control'"),
    ({"QualityControlSubject": "YES"}, "QualityControlSubject is YES"),
])
def test_qa_detection_with_reason(attrs: dict[str, str], reason: str) -> None:
    docs = extract_dose(b.ct_report([b.ct_event("1.2.3.920")], **attrs))
    assert {(d["not_patient"], d["not_patient_reason"]) for d in docs} == {(True, reason)}


@pytest.mark.parametrize("attrs", [
    {"PatientID": "P1234"}, {"patient_name": "Qaderi^Ann"}, {"study_description": "Stress test myocardial"},
    {"PatientID": "TESTA991"},
])
def test_patients_not_flagged(attrs: dict[str, str]) -> None:
    docs = extract_dose(b.ct_report([b.ct_event("1.2.3.921")], **attrs))
    assert {(d["not_patient"], d["not_patient_reason"]) for d in docs} == {(False, None)}


def test_dose_cli_table_shows_administrations(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from copydicom.cli import main

    path = tmp_path / "rr.dcm"
    path.write_bytes(b.to_bytes(b.rrdsr_multi([b.administration("1.2.3.930", "370", organs=[
        b.organ_dose(b.BLADDER, "45.5")])])))
    assert main(["dose", str(path)]) == 0
    out = capsys.readouterr().out
    assert "activity 370 MBq" in out and "organ doses 1" in out
