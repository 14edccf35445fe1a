"""S3 endpoint configuration, URLs and object keys."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import Identity
from copydicom.sinks.s3 import DEFAULT_KEY_TEMPLATE, S3Config, object_key, study_prefix
from copydicom.sinks.s3._keys import check_key_template, escape_value

W = "destinations.archive"


def test_url_with_endpoint_region_and_prefix() -> None:
    cfg = S3Config.from_url("s3://research/ct/?endpoint_url=http://127.0.0.1:8333&region=us-east-1")
    assert (cfg.bucket, cfg.prefix, cfg.endpoint_url, cfg.region) == (
        "research", "ct/", "http://127.0.0.1:8333", "us-east-1"
    )
    assert cfg.allow_overwrite is False
    assert cfg.key_template == DEFAULT_KEY_TEMPLATE
    assert cfg.access_key_id is None and cfg.secret_access_key is None
    assert cfg.name == "s3:research"


def test_url_prefix_gets_a_trailing_slash_and_options_parse() -> None:
    cfg = S3Config.from_url("s3://research/a/b?allow_overwrite=true&multipart_threshold_mb=64&sse=AES256")
    assert (cfg.prefix, cfg.allow_overwrite, cfg.multipart_threshold, cfg.sse) == (
        "a/b/", True, 64 * 1024 * 1024, "AES256"
    )
    assert S3Config.from_url("s3://research").prefix == ""


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://research/", "expected an s3://"),
        ("s3://key:secret@research/", "credentials do not belong"),
        ("s3://research/?secret_access_key=x", "forbidden URL parameter 'secret_access_key'"),
        ("s3://research/?colour=blue", "unknown or forbidden URL parameter 'colour'"),
        ("s3://Research_Bucket/", "not a valid bucket name"),
        ("s3://research/?allow_overwrite=maybe", "allow_overwrite: expected true or false"),
        ("s3://research/?multipart_threshold_mb=1", "multipart_threshold_mb: expected a number >= 5"),
        ("s3://research/?endpoint_url=ftp://x", "endpoint_url: expected an http"),
    ],
)
def test_bad_urls_are_config_errors(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        S3Config.from_url(url)


def test_mapping_with_secret_file_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    secret.chmod(0o600)
    monkeypatch.setenv("KEY_ID", "AKIAEXAMPLE")
    cfg = S3Config.from_mapping(
        "archive",
        {"type": "s3", "bucket": "research", "prefix": "ct/", "access_key_id": "${KEY_ID}",
         "secret_access_key_file": str(secret), "sse": "aws:kms", "sse_kms_key_id": "alias/k"},
        where=W,
    )
    assert (cfg.access_key_id, cfg.secret_access_key, cfg.sse, cfg.sse_kms_key_id) == (
        "AKIAEXAMPLE", "s3cr3t", "aws:kms", "alias/k"
    )
    assert "s3cr3t" not in repr(cfg)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({}, r"destinations.archive.bucket: required"),
        ({"bucket": "research", "colour": 1}, "unknown key 'colour'"),
        ({"bucket": "research", "prefix": "ct"}, r"prefix: must end with '/'"),
        ({"bucket": "research", "prefix": "/ct/"}, r"prefix: must not start with '/'"),
        ({"bucket": "research", "access_key_id": "A"}, "give both access_key_id and secret_access_key"),
        ({"bucket": "research", "sse": "rot13"}, r"sse: expected one of"),
        ({"bucket": "research", "sse_kms_key_id": "k"}, r"sse_kms_key_id: only with sse: aws:kms"),
        ({"bucket": "research", "key_template": "{prefix}{SeriesInstanceUID}.dcm"}, "must contain"),
        ({"bucket": "research", "key_template": "{prefix}{PatientName}/{SOPInstanceUID}"}, "unknown field"),
        ({"bucket": "research", "key_template": "{SOPInstanceUID}.dcm"}, r"must start with \{prefix\}"),
        ({"bucket": "research", "type": "orthanc"}, r"type: expected 's3'"),
    ],
)
def test_bad_mappings_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        S3Config.from_mapping("archive", data, where=W)


IDENTITY = Identity("PAT/1", "1.2.3", "1.2.3.4", "1.2.3.4.5")


def test_default_key_keeps_the_study_together() -> None:
    assert object_key(DEFAULT_KEY_TEMPLATE, "ct/", IDENTITY) == "ct/1.2.3/1.2.3.4/1.2.3.4.5.dcm"
    assert study_prefix(DEFAULT_KEY_TEMPLATE, "ct/", "1.2.3") == "ct/1.2.3/"


def test_other_templates() -> None:
    template = "{prefix}{PatientID}/{OrthancID}.dcm"
    check_key_template(template, where=W)
    assert object_key(template, "", IDENTITY) == f"PAT%2F1/{IDENTITY.orthanc_id}.dcm"
    assert study_prefix(template, "", "1.2.3") is None


def test_escaping_never_adds_or_climbs_segments() -> None:
    assert escape_value("..") == "%2E%2E"
    assert escape_value("a b/ü") == "a%20b%2F%C3%BC"
    assert escape_value("1.2.840.10008") == "1.2.840.10008"


def test_missing_uid_is_an_invalid_instance() -> None:
    with pytest.raises(InvalidInstance, match="no SOPInstanceUID"):
        object_key(DEFAULT_KEY_TEMPLATE, "", Identity("P", "1.2", "1.2.3", ""))


def test_head_before_put_needs_conditional_put() -> None:
    with pytest.raises(ConfigError, match="head_before_put: can be false only with conditional_put: true"):
        S3Config.from_mapping("a", {"bucket": "research", "head_before_put": False, "conditional_put": False},
                              where=W)
    assert S3Config.from_url("s3://research/?head_before_put=false").head_before_put is False


@pytest.mark.parametrize("template", [
    DEFAULT_KEY_TEMPLATE,
    "{prefix}{PatientID}/{StudyInstanceUID}/{SOPInstanceUID}.dcm",
    "{prefix}{OrthancStudyID}/{OrthancSeriesID}/{OrthancID}",
    "{prefix}{SOPInstanceUID}-{SOPInstanceUID}",
])
@pytest.mark.parametrize("patient", ["P1", "a/b", "..", "Müller^Ann", ""])
def test_keys_computed_from_the_template_fields_only_are_the_full_mapping(template: str, patient: str) -> None:
    """object_key computes only the fields its template names: the same key as every field formatted."""
    from copydicom.sinks.s3._keys import key_fields

    ident = Identity(patient, "1.2.3", "1.2.3.4", "1.2.3.4.5")
    assert object_key(template, "p/", ident) == template.format_map(key_fields(ident, "p/"))

    # escape_value's fast path for plain values gives what the character-by-character encoding gives
    by_character = "".join(
        c if c.isascii() and (c.isalnum() or c in "._-") else "".join(f"%{b:02X}" for b in c.encode()) for c in patient
    )
    assert escape_value(patient) == ("%2E%2E" if patient == ".." else by_character)
