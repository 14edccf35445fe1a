"""Keyed UID map (hypothesis), pseudonyms, date offsets, identity prediction."""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydicom import dcmread

from copydicom.model import Identity, Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage, is_valid_uid, keyed_pseudonym, keyed_uid
from copydicom.stages.deid._keyed import date_offset_days
from tests.support.synthetic import ct_dataset, ct_study_files, to_bytes

KEY = b"property-key-0123456789abcdef-01"
component = st.one_of(st.just("0"), st.integers(min_value=1, max_value=10**20).map(str))
uids = st.lists(component, min_size=2, max_size=8).map(".".join).filter(lambda u: len(u) <= 64)


@given(uids)
def test_uid_map_deterministic_and_valid(uid: str) -> None:
    new = keyed_uid(KEY, uid)
    assert new == keyed_uid(bytes(KEY), str(uid))
    assert new.startswith("2.25.") and is_valid_uid(new) and len(new) <= 44


@settings(max_examples=200)
@given(st.lists(uids, min_size=2, max_size=50, unique=True))
def test_uid_map_injective(values: list[str]) -> None:
    mapped = [keyed_uid(KEY, u) for u in values if not u.startswith("1.2.840.10008.")]
    assert len(set(mapped)) == len(mapped)


@given(uids)
def test_uid_map_depends_on_key(uid: str) -> None:
    assert keyed_uid(KEY, uid) != keyed_uid(KEY[::-1], uid)


def test_well_known_uids_never_replaced() -> None:
    for uid in ("1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.2.16.4"):
        assert keyed_uid(KEY, uid) == uid


def test_pseudonym_and_offset_stable() -> None:
    assert keyed_pseudonym(KEY, "SYN000001") == keyed_pseudonym(KEY, "SYN000001")
    assert keyed_pseudonym(KEY, "SYN000001") != keyed_pseudonym(KEY, "SYN000002")
    assert len(keyed_pseudonym(KEY, "x")) == 20
    offsets = {date_offset_days(KEY, f"P{i}", -3650, -1) for i in range(200)}
    assert all(-3650 <= o <= -1 for o in offsets) and len(offsets) > 150


def test_transform_identity_agrees_with_process() -> None:
    for profile in (DeidProfile.default(), DeidProfile(options=("retain_uids",))):
        stage = DeidStage(profile, KEY)
        for data in ct_study_files(6, patients=2, rows=8, cols=8):
            before = Identity.from_dataset(dcmread(io.BytesIO(data)))
            out = stage.process(Instance(InstanceRef("x"), data))
            assert out.identity == stage.transform_identity(before)
            assert out.target_id == stage.transform_identity(before).orthanc_id
            assert out.identity == Identity.from_dataset(dcmread(io.BytesIO(out.data)))


def test_one_study_and_dates_keep_intervals() -> None:
    stage = DeidStage(DeidProfile.default(), KEY)
    outs = [stage.process(Instance(InstanceRef("x"), d)).dataset for d in ct_study_files(8, rows=8, cols=8)]
    assert len({o.StudyInstanceUID for o in outs if o is not None}) == 1
    assert len({o.SeriesInstanceUID for o in outs if o is not None}) == 4
    a = ct_dataset(5, 0, 0, 0, rows=8, cols=8)
    b = ct_dataset(5, 3, 0, 0, rows=8, cols=8)  # same patient, later study
    da, db = (stage.process(Instance(InstanceRef("x"), to_bytes(x))).dataset for x in (a, b))
    import datetime as dt

    def day(s: str) -> dt.date:
        return dt.date(int(s[:4]), int(s[4:6]), int(s[6:8]))

    assert da is not None and db is not None
    assert day(db.StudyDate) - day(da.StudyDate) == day(b.StudyDate) - day(a.StudyDate)
    assert da.StudyDate != a.StudyDate


def test_invalid_and_partial_dates_cleaned_and_noted() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.StudyDate = "2024"
    ds.AcquisitionDateTime = "202402"
    ds.SeriesDate = "20241341"
    out = DeidStage(DeidProfile.default(), KEY).process(Instance(InstanceRef("x"), to_bytes(ds)))
    assert out.dataset is not None
    again = dcmread(io.BytesIO(out.data))
    assert again.StudyDate == "" and again.SeriesDate == ""
    assert again.AcquisitionDateTime == ""
    assert ["(0008,0020)", "Z(invalid date)"] in out.audit["deid"]
    assert ["(0008,0021)", "Z(invalid date)"] in out.audit["deid"]


def test_invalid_values_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from pydicom import Dataset

    data = to_bytes(ct_dataset(1, rows=8, cols=8))
    stage = DeidStage(DeidProfile(options=("clean_descriptors", "retain_long_modified_dates")), KEY)
    bad = Dataset()
    bad.add_new(0x00080020, "DA", "SECRET99")  # invalid DA quoting a value
    with caplog.at_level(logging.DEBUG):
        _ = bad[0x00080020].value
        stage.process(Instance(InstanceRef("x"), data))
    assert "SECRET99" not in caplog.text


def test_key_entropy_and_folder_checks(tmp_path: "Path", caplog: "pytest.LogCaptureFixture") -> None:
    """Hardening 15: a weak key is warned about; a key in a folder anyone may write to is refused."""
    import base64
    import os
    from pathlib import Path

    import pytest

    from copydicom.errors import ConfigError
    from copydicom.stages.deid import load_key
    from copydicom.stages.deid._profile import key_entropy_bits

    assert key_entropy_bits(base64.b64encode(os.urandom(32))) >= 256
    assert key_entropy_bits(b"k" * 64) == 64
    assert key_entropy_bits(b"0123456789abcdef" * 2) == 128
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    good = private / "good.key"
    good.write_bytes(base64.b64encode(os.urandom(32)))
    good.chmod(0o600)
    weak = private / "weak.key"
    weak.write_bytes(b"k" * 64)
    weak.chmod(0o600)
    caplog.clear()
    load_key(good)
    assert "entropy" not in caplog.text
    load_key(weak)
    assert "about 64 bits of entropy" in caplog.text
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    key = shared / "deid.key"
    key.write_bytes(base64.b64encode(os.urandom(32)))
    key.chmod(0o600)
    with pytest.raises(ConfigError, match="anyone may write to"):
        load_key(key)
    shared.chmod(0o1777)
    caplog.clear()
    load_key(key)
    assert "shared folder" in caplog.text
    assert isinstance(Path(key), Path)
