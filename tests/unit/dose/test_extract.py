"""Dose extraction on generated fixtures: one test (at least) per quirk of the issue."""

from __future__ import annotations

import json
from typing import Any

import pytest

from copydicom.model import Instance, InstanceRef
from copydicom.stages.dose import DoseStage, extract_dose, is_dose_report, is_dose_screen
from copydicom.stages.dose._codes import concept
from copydicom.stages.dose._units import convert
from tests.unit.dose import builder as b


def events(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [d for d in docs if d["doc_type"] == "irradiation_event"]


def summary(docs: list[dict[str, Any]]) -> dict[str, Any]:
    [s] = [d for d in docs if d["doc_type"] == "dose_summary"]
    return s


def test_ct_report_fields_and_ids() -> None:
    ds = b.ct_report([b.ct_event("1.2.3.1")])
    docs = extract_dose(ds)
    json.dumps(docs)
    [ev] = events(docs)
    assert ev["_id"] == "1.2.3.1"
    assert ev["report"] == {
        "sop_instance_uid": "1.2.826.0.1.3680043.8.498.1",
        "study_instance_uid": "1.2.826.0.1.3680043.8.498.2",
        "series_instance_uid": "1.2.826.0.1.3680043.8.498.3",
        "sop_class_uid": "1.2.840.10008.5.1.4.1.1.88.67",
        "template": "TID 10011",
    }
    assert ev["equipment"] == {"manufacturer": "ACME", "model": "Scanner 9000", "station": "CT1",
                               "device_serial": None}
    assert ev["study"] == {"accession": "ACC123", "description": "CT CHEST", "date": "2024-01-31"}
    assert ev["event"]["uid"] == "1.2.3.1"
    assert ev["event"]["index"] == 0
    assert ev["event"]["protocol"] == "Chest routine"
    assert ev["event"]["target_region"] == {"code": "51185008", "scheme": "SCT", "meaning": "Chest",
                                             "concept": "SCT:51185008"}
    assert ev["event"]["type"] == {"code": "P5-08001", "scheme": "SRT", "meaning": "Spiral Acquisition",
                                    "concept": "SCT:116152004"}
    ct = ev["ct"]
    assert ct["ctdivol_mgy"] == 12.3
    assert ct["dlp_mgy_cm"] == 456.7
    assert ct["scan_length_mm"] == 350.0
    assert ct["pitch"] == 0.984
    assert ct["number_of_sources"] == 1
    assert ct["phantom"] == {"code": "113691", "scheme": "DCM", "meaning": "IEC Body Dosimetry Phantom",
                            "concept": "DCM:113691"}
    assert ct["raw"]["ctdivol_mgy"] == {"value": "12.3", "unit": "mGy"}
    assert ct["raw"]["dlp_mgy_cm"] == {"value": "456.7", "unit": "mGy.cm"}
    assert ev["quality"] == {"warnings": []}
    assert ev["not_patient"] is False
    s = summary(docs)
    assert s["_id"] == "summary-1.2.826.0.1.3680043.8.498.1"
    assert s["totals"]["ct_dlp_mgy_cm"] == 456.7
    assert s["totals"]["event_count"] == 1
    assert s["totals"]["raw"]["ct_dlp_mgy_cm"] == {"value": "456.7", "unit": "mGy.cm"}
    assert s["events_extracted"] == 1
    assert docs[-1] is s


def test_two_xray_sources_per_ct_event() -> None:
    ev = events(extract_dose(b.ct_report([b.ct_event(
        "1.2.3.9", sources=[b.ct_source("A", "100", "150"), b.ct_source("B", "140", "90", max_ma="300")])])))[0]
    sources = ev["ct"]["sources"]
    assert [(s["id"], s["kvp_kv"], s["tube_current_ma"], s["max_tube_current_ma"]) for s in sources] == [
        ("A", 100.0, 150.0, 500.0), ("B", 140.0, 90.0, 300.0)]
    assert sources[1]["raw"]["kvp_kv"] == {"value": "140", "unit": "kV"}
    assert ev["ct"]["number_of_sources"] == 2


def test_scout_without_dose_is_null_not_zero() -> None:
    scout = b.ct_event("1.2.3.10", acq_type=b.CONSTANT_ANGLE, dose=False)
    ev = events(extract_dose(b.ct_report([scout])))[0]
    assert ev["ct"]["ctdivol_mgy"] is None
    assert ev["ct"]["dlp_mgy_cm"] is None
    assert ev["ct"]["phantom"] is None
    assert "ctdivol_mgy" not in ev["ct"]["raw"]
    assert ev["event"]["type"]["code"] == "113805"
    # An empty Measured Value Sequence is also missing, not 0.
    empty = b.ct_event("1.2.3.11", ctdivol=None)
    ev2 = events(extract_dose(b.ct_report([empty])))[0]
    assert ev2["ct"]["ctdivol_mgy"] is None
    assert ev2["ct"]["dlp_mgy_cm"] == 456.7


def test_real_zero_mammography_agd_is_a_value() -> None:
    ev = b.xray_event("1.2.5.1", protocol="L CC", ev_type=b.STATIONARY, extra=[
        b.num(b.AGD, "0.00", "mGy"), b.coded(b.LATERALITY_SRT, b.LEFT_BREAST_SRT)])
    acc = b.container(b.ACCUM_XRAY, [b.coded(b.PLANE, b.SINGLE_PLANE)])
    acc_agd_left = b.num(b.ACC_AGD, "0.00", "mGy")
    acc_agd_left.ContentSequence = [b.coded(b.LATERALITY_SCT, ("80248007", "SCT", "Left breast"),
                                            rel="HAS CONCEPT MOD")]
    acc_agd_right = b.num(b.ACC_AGD, "1.25", "mGy")
    acc_agd_right.ContentSequence = [b.coded(b.LATERALITY_SRT, ("T-04020", "SRT", "Right breast"),
                                             rel="HAS CONCEPT MOD")]
    acc.ContentSequence.extend([acc_agd_left, acc_agd_right])
    docs = extract_dose(b.projection_report([ev], [acc], proc=b.MAMMO_SCT))
    [e] = events(docs)
    assert e["mammo"]["agd_mgy"] == 0.0
    assert e["mammo"]["laterality"] == "left"
    assert e["mammo"]["raw"]["agd_mgy"] == {"value": "0.00", "unit": "mGy"}
    agd = summary(docs)["totals"]["agd_mgy_by_laterality"]
    assert agd["left"] == 0.0
    assert agd["right"] == 1.25
    assert agd["raw"]["left"] == {"value": "0.00", "unit": "mGy"}


def test_empty_code_values() -> None:
    ev = b.ct_event("1.2.3.12", target=("", "SCT", "Chest"))
    # A content item whose concept name has an empty code value is ignored, not matched by meaning.
    ev.ContentSequence.append(b.num(("", "DCM", "Mean CTDIvol"), "99", "mGy"))
    [e] = events(extract_dose(b.ct_report([ev])))
    assert e["event"]["target_region"] == {"code": None, "scheme": "SCT", "meaning": "Chest",
                                             "concept": None}
    assert "event.target_region: empty code value" in e["quality"]["warnings"]
    assert e["ct"]["ctdivol_mgy"] == 12.3


def test_meaning_text_is_never_used() -> None:
    ev = b.ct_event("1.2.3.13", dose=False)
    ev.ContentSequence.append(b.container(("999999", "DCM", "CT Dose"), [b.num(("999998", "DCM", "Mean CTDIvol"),
                                                                               "50", "mGy")]))
    [e] = events(extract_dose(b.ct_report([ev])))
    assert e["ct"]["ctdivol_mgy"] is None


def test_bad_numbers_warn_per_field_and_exponents_parse() -> None:
    ev = b.ct_event("1.2.3.14", ctdivol=b"10.50/ 15.00", dlp=b"1.6e-005")
    docs = extract_dose(b.ct_report([ev], total_dlp=b"abc"))
    [e] = events(docs)
    assert e["ct"]["ctdivol_mgy"] is None
    assert e["ct"]["raw"]["ctdivol_mgy"] == {"value": "10.50/ 15.00", "unit": "mGy"}
    assert e["ct"]["dlp_mgy_cm"] == 1.6e-05
    assert e["quality"]["warnings"] == ["ct.ctdivol_mgy: unreadable number '10.50/ 15.00'"]
    s = summary(docs)
    assert s["totals"]["ct_dlp_mgy_cm"] is None
    assert s["quality"]["warnings"] == ["totals.ct_dlp_mgy_cm: unreadable number 'abc'"]


def test_identical_events_with_different_uids_are_all_kept() -> None:
    docs = extract_dose(b.ct_report([b.ct_event("1.2.3.20"), b.ct_event("1.2.3.21"), b.ct_event("1.2.3.22")],
                                    n_events="3"))
    evs = events(docs)
    assert [e["_id"] for e in evs] == ["1.2.3.20", "1.2.3.21", "1.2.3.22"]
    assert [e["event"]["index"] for e in evs] == [0, 1, 2]
    assert [e["ct"]["ctdivol_mgy"] for e in evs] == [12.3, 12.3, 12.3]
    assert summary(docs)["totals"]["event_count"] == 3


def test_cumulative_reports_share_event_ids() -> None:
    first = b.ct_report([b.ct_event("1.2.3.30")], sop_uid="1.2.9.1")
    second = b.ct_report([b.ct_event("1.2.3.30"), b.ct_event("1.2.3.31", dlp="100")], total_dlp="556.7",
                         n_events="2", sop_uid="1.2.9.2")
    d1, d2 = extract_dose(first), extract_dose(second)
    assert [e["_id"] for e in events(d1)] == ["1.2.3.30"]
    assert [e["_id"] for e in events(d2)] == ["1.2.3.30", "1.2.3.31"]
    assert events(d1)[0]["ct"] == events(d2)[0]["ct"]
    assert summary(d1)["_id"] == "summary-1.2.9.1"
    assert summary(d2)["_id"] == "summary-1.2.9.2"
    assert summary(d2)["totals"]["ct_dlp_mgy_cm"] == 556.7


def test_text_in_another_character_set() -> None:
    latin1 = "Thorax Übersicht".encode("latin-1")
    ds = b.ct_report([b.ct_event("1.2.3.40", protocol=latin1)], charset="ISO_IR 192")
    [e] = events(extract_dose(ds))
    assert e["event"]["protocol"] == "Thorax Übersicht"
    assert e["quality"]["warnings"] == [
        "event.protocol: text not in the declared character set ISO_IR 192; decoded as latin-1"]
    utf8 = "Thorax Übersicht".encode()
    ds2 = b.ct_report([b.ct_event("1.2.3.41", protocol=utf8)], charset="ISO_IR 100")
    [e2] = events(extract_dose(ds2))
    assert e2["event"]["protocol"] == "Thorax Übersicht"
    assert e2["quality"]["warnings"] == [
        "event.protocol: text is UTF-8 but the declared character set is ISO_IR 100; decoded as UTF-8"]
    # Declared and actual agree: no warning.
    ds3 = b.ct_report([b.ct_event("1.2.3.42", protocol=latin1)], charset="ISO_IR 100")
    [e3] = events(extract_dose(ds3))
    assert (e3["event"]["protocol"], e3["quality"]["warnings"]) == ("Thorax Übersicht", [])


def test_two_plane_fluoroscopy() -> None:
    evs = [
        b.xray_event("1.2.4.1", plane=b.PLANE_A, dap="12.5", dap_unit="dGy.cm2", dose_rp="3.5", dose_rp_unit="mGy"),
        b.xray_event("1.2.4.2", plane=b.PLANE_B, dap="0.000125", dap_unit="Gym2", dose_rp="0.002", kvp="82"),
    ]
    acc = [
        b.accumulated_xray(b.PLANE_A, "2520", "dGy.cm2", "0.125", "Gy", "312.5"),
        b.accumulated_xray(b.PLANE_B, "0.0105", "Gy.m2", "85", "mGy", "120000", time_unit="ms"),
    ]
    docs = extract_dose(b.projection_report(evs, acc))
    e1, e2 = events(docs)
    assert e1["report"]["template"] == "TID 10001"
    assert (e1["projection"]["plane"], e2["projection"]["plane"]) == ("A", "B")
    assert e1["projection"]["dap_gy_m2"] == 0.000125
    assert e1["projection"]["raw"]["dap_gy_m2"] == {"value": "12.5", "unit": "dGy.cm2"}
    assert e1["projection"]["dose_rp_mgy"] == 3.5
    assert e2["projection"]["dap_gy_m2"] == 0.000125
    assert e2["projection"]["dose_rp_mgy"] == 2.0
    assert e2["projection"]["kvp_kv"] == 82.0
    assert e1["projection"]["pulse_rate_per_s"] == 15.0
    assert e1["projection"]["number_of_pulses"] == 30
    assert e1["projection"]["pulse_width_ms"] == 8.0
    assert e1["event"]["type"] == {"code": "P5-06000", "scheme": "SRT", "meaning": "Fluoroscopy",
                                    "concept": "SCT:44491008"}
    totals = summary(docs)["totals"]
    assert totals["dap_gy_m2"] is None  # not stated for both planes together: never re-summed
    a, bp = totals["by_plane"]["A"], totals["by_plane"]["B"]
    assert (a["dap_gy_m2"], a["dose_rp_mgy"], a["fluoro_time_s"]) == (0.0252, 125.0, 312.5)
    assert (bp["dap_gy_m2"], bp["dose_rp_mgy"], bp["fluoro_time_s"]) == (0.0105, 85.0, 120.0)
    assert (a["fluoro_dap_gy_m2"], a["acquisition_dap_gy_m2"]) == (0.002, 0.001)
    assert bp["raw"]["fluoro_time_s"] == {"value": "120000", "unit": "ms"}


def test_single_plane_totals_at_top_level() -> None:
    acc = [b.accumulated_xray(b.SINGLE_PLANE, "0.0031", "Gy.m2", "0.04", "Gy", "65.2")]
    docs = extract_dose(b.projection_report([b.xray_event("1.2.4.9")], acc, template=None))
    t = summary(docs)["totals"]
    assert (t["dap_gy_m2"], t["dose_rp_mgy"], t["fluoro_time_s"]) == (0.0031, 40.0, 65.2)
    assert (t["fluoro_dap_gy_m2"], t["acquisition_dap_gy_m2"]) == (0.002, 0.001)
    assert "by_plane" not in t
    assert summary(docs)["report"]["template"] == "TID 10001"


@pytest.mark.parametrize("kwargs", [
    {"QualityControlSubject": "YES"},
    {"patient_name": "CT^PHANTOM"},
    {"study_description": "Monthly QA"},
])
def test_qa_phantom_study_is_flagged(kwargs: dict[str, str]) -> None:
    docs = extract_dose(b.ct_report([b.ct_event("1.2.3.50")], **kwargs))
    assert all(d["not_patient"] is True for d in docs)


def test_patient_study_is_not_flagged() -> None:
    docs = extract_dose(b.ct_report([b.ct_event("1.2.3.51")], patient_name="Qaderi^Ann"))
    assert [d["not_patient"] for d in docs] == [False, False]


def test_missing_protocol_name() -> None:
    [e] = events(extract_dose(b.ct_report([b.ct_event("1.2.3.60", protocol=None)])))
    assert e["event"]["protocol"] is None
    assert e["quality"]["warnings"] == ["event.protocol: no acquisition protocol"]


def test_missing_event_uid_gets_deterministic_id() -> None:
    ev = b.ct_event("1.2.3.61")
    ev.ContentSequence = [c for c in ev.ContentSequence if c.ConceptNameCodeSequence[0].CodeValue != "113769"]
    [e] = events(extract_dose(b.ct_report([ev], sop_uid="1.2.9.9")))
    assert e["_id"] == "event-1.2.9.9-0"
    assert "event.uid: no Irradiation Event UID" in e["quality"]["warnings"]


def test_ge_enhanced_sr_with_dose_root_and_sct_codes() -> None:
    ds = b.ct_report([b.ct_event("1.2.3.70", dlp="45.6", dlp_unit="mGycm")], template=None,
                     proc=b.CT_PROC_SCT, sop_class=b.ENHANCED_SR)
    assert is_dose_report(ds)
    docs = extract_dose(ds)
    assert summary(docs)["report"]["template"] == "TID 10011"
    assert events(docs)[0]["ct"]["dlp_mgy_cm"] == 45.6
    assert summary(docs)["quality"]["warnings"] == []


def test_enhanced_sr_without_dose_root_is_not_a_report() -> None:
    ds = b.ct_report([b.ct_event("1.2.3.71")], sop_class=b.ENHANCED_SR)
    ds.ConceptNameCodeSequence[0].CodeValue = "18748-4"
    ds.ConceptNameCodeSequence[0].CodingSchemeDesignator = "LN"
    assert not is_dose_report(ds)
    assert extract_dose(ds) == []


def test_srt_and_sct_codes_compare_equal() -> None:
    assert concept("P5-08000", "SRT") == concept("77477000", "SCT")
    assert concept("G-C171", "srt") == concept("272741003", "SCT")
    assert concept("113830", "DCM") != concept("113830", "SCT")
    assert concept("", "DCM") is None


@pytest.mark.parametrize(("value", "unit", "target", "expected"), [
    (1.0, "Gy.m2", "gy_m2", 1.0), (1.0, "Gym2", "gy_m2", 1.0), (10.0, "dGy.cm2", "gy_m2", 0.0001),
    (2.0, "Gy", "mgy", 2000.0), (2.0, "mGy", "mgy", 2.0), (5.0, "mGy.cm", "mgy_cm", 5.0),
    (5.0, "mGycm", "mgy_cm", 5.0), (3.0, "s", "s", 3.0), (1500.0, "ms", "s", 1.5),
])
def test_unit_conversions(value: float, unit: str, target: str, expected: float) -> None:
    assert convert(value, unit, target) == expected


def test_unknown_unit_warns_and_keeps_raw() -> None:
    [e] = events(extract_dose(b.ct_report([b.ct_event("1.2.3.80", dlp="4", dlp_unit="furlong")])))
    assert e["ct"]["dlp_mgy_cm"] is None
    assert e["ct"]["raw"]["dlp_mgy_cm"] == {"value": "4", "unit": "furlong"}
    assert e["quality"]["warnings"] == ["ct.dlp_mgy_cm: unknown unit 'furlong'"]


def test_radiopharmaceutical_report() -> None:
    docs = extract_dose(b.rrdsr(activity="10", unit="mCi"))
    assert [d["doc_type"] for d in docs] == ["irradiation_event", "dose_summary"]  # one event per administration
    s = docs[-1]
    assert s["report"]["template"] == "TID 10021"
    rp = s["radiopharmaceutical"]
    assert rp["agent"] == {"code": "C-B1031", "scheme": "SRT", "meaning": "Fluorodeoxyglucose F^18^",
                           "concept": "SRT:C-B1031"}
    assert rp["radionuclide"] == {"code": "C-111A1", "scheme": "SRT", "meaning": "^18^Fluorine",
                                 "concept": "SRT:C-111A1"}
    assert rp["administered_activity_mbq"] == 370.0
    assert rp["raw"]["administered_activity_mbq"] == {"value": "10", "unit": "mCi"}
    assert rp["effective_dose_msv"] == 7.0
    assert rp["administration_uid"] == "1.2.3.4.5.6"
    assert s["totals"]["event_count"] == 1


def test_dose_screen_recognised_without_values() -> None:
    ds = b.dose_screen("Dose Report")
    assert is_dose_screen(ds) and not is_dose_report(ds)
    [doc] = extract_dose(ds)
    assert doc["_id"] == "screen-1.2.826.0.1.3680043.8.498.77"
    assert doc["doc_type"] == "dose_screen"
    assert doc["screen"] == {"series_description": "Dose Report"}
    assert "totals" not in doc and "ct" not in doc
    assert not is_dose_screen(b.dose_screen("Axial 5mm"))
    assert is_dose_screen(b.dose_screen("Patient Protocol"))


def test_dose_stage_appends_documents_and_passes_others() -> None:
    report = b.ct_report([b.ct_event("1.2.3.90")])
    inst = Instance(InstanceRef("a"), b.to_bytes(report))
    out = DoseStage().process(inst)
    assert out is inst
    assert [d["_id"] for d in inst.documents] == ["1.2.3.90", "summary-1.2.826.0.1.3680043.8.498.1"]
    assert inst.dataset is None  # the stage does not keep a pixel-less dataset
    ct_image = b.dose_screen("Axial")
    ct_image.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct_image.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    other = Instance(InstanceRef("b"), b.to_bytes(ct_image))
    assert DoseStage().process(other).documents == []
    parsed = Instance(InstanceRef("c"), b"", dataset=report)
    assert len(DoseStage().process(parsed).documents) == 2


def test_malformed_content_tree_gives_summary_with_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    from copydicom.stages.dose import _templates

    def broken(*args: object) -> None:
        raise KeyError("boom")

    monkeypatch.setattr(_templates.CtIrradiationEvent, "from_item", broken)
    docs = extract_dose(b.ct_report([b.ct_event("1.2.3.99")]))
    assert [d["doc_type"] for d in docs] == ["dose_summary"]
    assert docs[0]["quality"]["warnings"] == [
        "template: content tree unreadable (KeyError); no events extracted"]


def test_event_type_concept_is_the_same_for_srt_and_sct() -> None:
    srt = events(extract_dose(b.ct_report([b.ct_event("1.2.3.100", acq_type=b.SPIRAL)])))[0]
    sct = events(extract_dose(b.ct_report([b.ct_event(
        "1.2.3.101", acq_type=("116152004", "SCT", "Spiral acquisition"))])))[0]
    assert srt["event"]["type"]["concept"] == sct["event"]["type"]["concept"] == "SCT:116152004"
    assert (srt["event"]["type"]["scheme"], sct["event"]["type"]["scheme"]) == ("SRT", "SCT")
