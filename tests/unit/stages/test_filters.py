"""Routing filters: parsing, the semantics of the issue, three-valued evaluation."""

from __future__ import annotations

import datetime as dt

import pytest
from pydicom import Dataset

from copydicom.errors import ConfigError
from copydicom.stages.filters import parse_cli_filters, parse_filter

CT = {"Modality": "CT", "SeriesDescription": "Abdomen 5mm", "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"]}


def test_the_issue_example_on_plain_dicts() -> None:
    f = parse_filter({"all": [{"Modality": ["CT", "SR"]}, {"not": {"SeriesDescription": "*scout*"}}]})
    assert f.evaluate(CT) is True
    assert f.evaluate({**CT, "SeriesDescription": "SCOUT view"}) is False  # case-insensitive glob
    assert f.evaluate({**CT, "Modality": "MR"}) is False
    assert f.evaluate({"Modality": "SR"}) is True  # missing SeriesDescription: its condition false, its not true


def test_missing_attribute_is_false_and_its_not_true() -> None:
    assert parse_filter({"BodyPartExamined": "HEAD"}).evaluate({"Modality": "CT"}) is False
    assert parse_filter({"not": {"BodyPartExamined": "HEAD"}}).evaluate({"Modality": "CT"}) is True
    assert parse_filter({"BodyPartExamined": "*"}).evaluate({"BodyPartExamined": ""}) is False  # empty = missing


def test_multi_valued_attribute_matches_when_any_value_does() -> None:
    f = parse_filter({"ImageType": "axial"})
    assert f.evaluate(CT) is True
    assert f.evaluate({"ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"}) is False  # Orthanc's backslash form
    assert parse_filter({"ImageType": "LOCALIZER"}).evaluate({"ImageType": "ORIGINAL\\PRIMARY\\LOCALIZER"}) is True


def test_date_ranges_in_dicom_syntax() -> None:
    f = parse_filter({"StudyDate": "20240101-20241231"})
    assert f.evaluate({"StudyDate": "20240615"}) is True
    assert f.evaluate({"StudyDate": "20241231"}) is True
    assert f.evaluate({"StudyDate": "20250101"}) is False
    assert parse_filter({"StudyDate": "20240101-"}).evaluate({"StudyDate": "20990101"}) is True
    assert parse_filter({"StudyDate": "-20231231"}).evaluate({"StudyDate": "20240101"}) is False
    assert parse_filter({"StudyDate": "2024-06-15"}).evaluate({"StudyDate": "20240615"}) is True
    assert parse_filter({"StudyDate": dt.date(2024, 6, 15)}).evaluate({"StudyDate": "20240615"}) is True
    assert parse_filter({"StudyTime": "070000-190000"}).evaluate({"StudyTime": "101500.123"}) is True
    assert parse_filter({"StudyTime": "0700-1900"}).evaluate({"StudyTime": "2001"}) is False


def test_tags_keywords_and_dicom_json_values() -> None:
    qido = {"00080060": {"vr": "CS", "Value": ["CT"]}, "00100010": {"vr": "PN", "Value": [{"Alphabetic": "DOE^J"}]}}
    assert parse_filter({"(0008,0060)": "CT"}).evaluate(qido) is True
    assert parse_filter({"00080060": ["MR", "CT"]}).evaluate(qido) is True
    assert parse_filter({"PatientName": "doe^*"}).evaluate(qido) is True


def test_sop_class_by_name_keyword_or_uid() -> None:
    attrs = {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2"}
    for value in ("CT Image Storage", "CTImageStorage", "1.2.840.10008.5.1.4.1.1.2", "ct image storage"):
        assert parse_filter({"SOPClassUID": value}).evaluate(attrs) is True, value
    assert parse_filter({"SOPClassUID": "MR Image Storage"}).evaluate(attrs) is False


def test_numbers_compare_as_numbers() -> None:
    assert parse_filter({"SeriesNumber": 3}).evaluate({"SeriesNumber": "3"}) is True
    assert parse_filter({"SeriesNumber": [1, 2]}).evaluate({"SeriesNumber": "3"}) is False


def test_three_valued_on_partial_metadata() -> None:
    f = parse_filter({"all": [{"Modality": "CT"}, {"not": {"ImageType": "*LOCALIZER*"}}]})
    series_level = {"Modality": "CT"}
    assert f.evaluate(series_level, complete=False) is None  # ImageType not known yet: decide on the dataset
    assert f.evaluate({"Modality": "MR"}, complete=False) is False  # decided without ImageType
    assert f.evaluate(series_level, complete=True) is True
    anyf = parse_filter({"any": [{"Modality": "SR"}, {"ImageType": "DERIVED"}]})
    assert anyf.evaluate({"Modality": "SR"}, complete=False) is True
    assert anyf.evaluate({"Modality": "CT"}, complete=False) is None


def test_several_keys_in_one_mapping_all_hold() -> None:
    f = parse_filter({"Modality": "CT", "BodyPartExamined": "HEAD"})
    assert f.evaluate({"Modality": "CT", "BodyPartExamined": "head"}) is True
    assert f.evaluate({"Modality": "CT", "BodyPartExamined": "CHEST"}) is False
    assert f.keywords == {"Modality", "BodyPartExamined"}


def test_dataset_evaluation() -> None:
    ds = Dataset()
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    f = parse_filter({"all": [{"Modality": "CT"}, {"not": {"ImageType": "LOCALIZER"}}]})
    assert f.matches_dataset(ds) is False
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert f.matches_dataset(ds) is True
    assert parse_filter({"CallingAETitle": "CT1"}).matches_dataset(ds, {"CallingAETitle": "CT1"}) is True
    assert parse_filter({"CallingAETitle": "CT1"}).matches_dataset(ds) is False


def test_command_line_form() -> None:
    f = parse_cli_filters(["Modality=CT,SR", "SeriesDescription!=*scout*"])
    assert f is not None
    assert f.evaluate(CT) is True
    assert f.evaluate({**CT, "SeriesDescription": "Scout"}) is False
    assert f.evaluate({"Modality": "SR"}) is True
    comma = parse_cli_filters([r"StudyDescription=CT\, abdomen,MR"])
    assert comma is not None
    assert comma.evaluate({"StudyDescription": "ct, ABDOMEN"}) is True
    assert comma.evaluate({"StudyDescription": "CT"}) is False
    assert parse_cli_filters([]) is None


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"Modalty": "CT"}, "filter.Modalty"),
        ({"all": {"Modality": "CT"}}, "filter.all"),
        ({"all": [{"Modality": "CT"}, {"Bogus": 1}]}, "filter.all[1].Bogus"),
        ({"not": {"StudyDate": "2024xx01-"}}, "filter.not.StudyDate"),
        ({"SOPClassUID": "No Such Storage"}, "filter.SOPClassUID"),
        ({"Modality": []}, "filter.Modality"),
        ({"Modality": {"x": 1}}, "filter"),
        ([], "filter"),
    ],
)
def test_invalid_filters_are_config_errors_naming_the_key(data: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_filter(data, where="filter")
    assert str(info.value).startswith(key)


@pytest.mark.parametrize("expr", ["Modality", "=CT", "Modality=", "Nope=1"])
def test_invalid_command_line_filters(expr: str) -> None:
    with pytest.raises(ConfigError, match="--filter"):
        parse_cli_filters([expr])
