"""Regressions found by the round-2 hostile review (one test per finding)."""

from __future__ import annotations

from pathlib import Path

import pytest
import responses

from copydicom.endpoints.dicomweb._config import DicomwebConfig
from copydicom.errors import ConfigError


@pytest.mark.parametrize(
    "url",
    ["dicomweb+http://u:p@127.0.0.1:99999/dicom-web", "dicomweb+http://127.0.0.1:0x1/dicom-web"],
)
def test_dicomweb_url_with_bad_port_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="port"):
        DicomwebConfig.from_url(url)


def test_dicomweb_yaml_url_with_bad_port_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="port must be a number"):
        DicomwebConfig.model_validate({"name": "x", "url": "http://127.0.0.1:99999/dicom-web"})


@pytest.mark.parametrize(
    "url",
    [
        "es+http://u:s3cret@127.0.0.1:99999/idx",
        "splunk+http://u:s3cret@127.0.0.1:99999?hec=http://127.0.0.1:8088&hec_token=tok",
    ],
)
def test_index_url_with_bad_port_is_a_config_error(url: str) -> None:
    from copydicom.app import endpoint_from_url

    with pytest.raises(ConfigError, match="Port out of range") as info:
        endpoint_from_url(url)
    assert "s3cret" not in str(info.value)


@responses.activate
def test_qido_404_on_a_top_level_search_is_a_wrong_url_not_an_empty_archive() -> None:
    """A typo in the base URL (``/dicomweb`` for ``/dicom-web``) used to read as "nothing to copy", exit 0."""
    from copydicom.endpoints.dicomweb._client import DicomwebClient

    cfg = DicomwebConfig.from_url("dicomweb+http://u:p@dw.test/nope", name="dw").model_copy(update={"retries": 0})
    responses.get("http://dw.test/nope/studies", status=404)
    with pytest.raises(ConfigError, match="not the base of a DICOMweb service"):
        list(DicomwebClient(cfg, side="source").qido(("studies",)))
    responses.get("http://dw.test/nope/studies/9/series", status=404)
    assert list(DicomwebClient(cfg, side="source").qido(("studies", "9", "series"))) == []


def _deep_and_truncated() -> list[bytes]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    from tests.support.synthetic import ct_dataset, to_bytes

    deep = ct_dataset(8, 0, 0, 1, rows=8, cols=8)
    inner = cur = Dataset()
    for _ in range(100):
        nxt = Dataset()
        cur.ReferencedImageSequence = Sequence([nxt])
        cur = nxt
    deep.ReferencedImageSequence = Sequence([inner])
    truncated = to_bytes(ct_dataset(8, 0, 0, 2, rows=32, cols=32))
    return [to_bytes(deep), truncated[: len(truncated) - 1000]]


def test_listener_route_quarantines_deep_nesting_and_truncation_instead_of_forwarding(tmp_path: Path) -> None:
    """A C-STORE push of a 200-deep file reached the Orthanc destination and crashed it (issue 11 item 10)."""
    from copydicom.endpoints.dimse import ListenerConfig
    from copydicom.endpoints.dimse.listener import ListenerSource, SpoolRunner, identity_of
    from copydicom.ledger import Ledger
    from copydicom.pipeline import Pipeline
    from tests.unit.fakes import FakeDestination

    cfg = ListenerConfig.from_mapping("rx", {"allowed_calling": ["M"], "spool": str(tmp_path / "spool")},
                                      where="endpoints.rx")
    source = ListenerSource(cfg)
    for data in _deep_and_truncated():
        source.spool.put(identity_of(data).orthanc_id, data)
    ledger = Ledger(tmp_path / "state.db")
    try:
        dest = FakeDestination()
        pipeline = Pipeline("rx-route", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1)
        summary = SpoolRunner("rx-route", source, pipeline).poll()
    finally:
        ledger.close()
    assert dest.stored == []
    assert summary.counts["quarantined"] == 2


def test_listener_quarantine_keeps_the_refused_bytes(tmp_path: Path) -> None:
    """The spool entry is the only copy (the sender was told Success): quarantine must keep it."""
    from copydicom.endpoints.dimse import ListenerConfig
    from copydicom.endpoints.dimse.listener import ListenerSource, SpoolRunner, identity_of
    from copydicom.ledger import Ledger
    from copydicom.pipeline import Pipeline
    from tests.unit.fakes import FakeDestination

    cfg = ListenerConfig.from_mapping("rx", {"allowed_calling": ["M"], "spool": str(tmp_path / "spool")},
                                      where="endpoints.rx")
    source = ListenerSource(cfg)
    sent = _deep_and_truncated()
    for data in sent:
        source.spool.put(identity_of(data).orthanc_id, data)
    ledger = Ledger(tmp_path / "state.db")
    try:
        pipeline = Pipeline("rx-route", source, [], [FakeDestination()], ledger, quarantine_dir=tmp_path / "q",
                            workers=1)
        SpoolRunner("rx-route", source, pipeline).poll()
    finally:
        ledger.close()
    kept = sorted(p.read_bytes() for p in (tmp_path / "q").rglob("*.dcm"))
    assert kept == sorted(sent)
    assert all((p.stat().st_mode & 0o077) == 0 for p in (tmp_path / "q").rglob("*.dcm"))
    assert source.spool.depth() == (0, None)


def test_quarantine_retry_of_a_listener_route_uses_the_saved_copy(tmp_path: Path) -> None:
    """The spool entry leaves once quarantined: a retry re-fetched from the spool, never delivered,
    and replaced the original reason by "spool entry ... vanished"."""
    from copydicom.config import parse_config
    from copydicom.endpoints.dimse.listener import identity_of
    from copydicom.ledger import Ledger
    from copydicom.quarantine import retry_entries
    from tests.support.synthetic import ct_study_files

    config = parse_config({
        "state": str(tmp_path / "state.db"),
        "endpoints": {
            "rx": {"type": "dimse_listener", "allowed_calling": ["M"], "spool": str(tmp_path / "spool")},
            "idx": {"type": "sqlite", "path": str(tmp_path / "index.db")},
        },
        "routes": [{"name": "rxroute", "source": "rx", "destinations": [], "indexes": ["idx"]}],
    }, base_dir=tmp_path)
    good, deep = next(iter(ct_study_files(1, rows=8, cols=8))), _deep_and_truncated()[0]
    ledger = Ledger(tmp_path / "state.db")
    try:
        for name, data, reason in (("good", good, "RejectedByDestination: HTTP 503"),
                                   ("deep", deep, "InvalidInstance: sequences nested deeper than 64 levels")):
            saved = tmp_path / f"{name}.dcm"
            saved.write_bytes(data)
            ledger.quarantine("rxroute", identity_of(data).orthanc_id, "rejected", reason, str(saved))
        ledger.flush()
        summary, unknown = retry_entries(config, ledger, ledger.quarantined(), {r.name: r for r in config.routes})
        left = ledger.quarantined()
    finally:
        ledger.close()
    assert unknown == []
    assert summary.counts["quarantined"] == 1
    assert [e.source_id for e in left] == [identity_of(deep).orthanc_id]
    assert "nested deeper" in left[0].reason and left[0].path


@pytest.mark.parametrize(
    "expression",
    ["StudyDate=2024-13-45", "StudyDate=20240230", "StudyDate=20240101-20241399", "Rows=abc", "SeriesNumber=three"],
)
def test_a_filter_value_that_can_never_match_is_a_config_error(expression: str) -> None:
    """These used to be accepted and filtered every instance out (exit 0, filtered=N)."""
    from copydicom.stages.filters import parse_cli_filters

    with pytest.raises(ConfigError, match=expression.split("=")[0]):
        parse_cli_filters([expression])


@pytest.mark.parametrize("expression", ["StudyDate=2024-02-29", "StudyDate=20240101-", "Rows=512", "Rows=5*",
                                        "SliceThickness=1.25"])
def test_valid_filter_values_still_parse(expression: str) -> None:
    from copydicom.stages.filters import parse_cli_filters

    assert parse_cli_filters([expression]) is not None


def test_a_receive_spool_others_may_write_to_is_refused(tmp_path: Path) -> None:
    """A local user could plant an instance in a 0777 spool and have the route deliver it."""
    import os

    from copydicom.endpoints.dimse.spool import ReceiveSpool

    folder = tmp_path / "spool"
    folder.mkdir()
    os.chmod(folder, 0o777)
    with pytest.raises(ConfigError, match="chmod 700"):
        ReceiveSpool(folder)
    os.chmod(folder, 0o700)
    assert ReceiveSpool(folder).depth() == (0, None)


def test_server_error_text_is_one_line_without_uids() -> None:
    """Orthanc's DICOMweb plugin answers a failed WADO-RS with a multi-line JSON whose "Uri" holds the
    source's Study/Series/SOP Instance UIDs: they reached the log and the failure reason."""
    from copydicom.errors import classify_http_status

    body = ('{\n\t"HttpStatus" : 500,\n\t"Uri" : "/dicom-web/studies/1.2.826.0.1.3680043.10.1381.243872457/series/'
            '1.2.826.0.1.3680043.10.1381.99/instances/2.25.195448611666438354471837265571599733257"\n}')
    error = classify_http_status(500, what="WADO-RS instance on 127.0.0.1:8042/dicom-web", side="source", body=body)
    assert error is not None
    text = str(error)
    assert "\n" not in text and "1.2.826" not in text and "2.25.1954486" not in text
    assert "127.0.0.1:8042" in text and "<uid>" in text


def test_console_that_cannot_bind_its_port_is_a_config_error(tmp_path: Path) -> None:
    """`console serve` on a port in use logged "console listening" and ran on without a console."""
    import socket

    from copydicom.console import ConsoleConfig, ConsoleServer

    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    try:
        port = holder.getsockname()[1]
        config = ConsoleConfig(listen=f"127.0.0.1:{port}", users_file=tmp_path / "users.yaml",
                               audit_log=tmp_path / "audit.log")

        async def app(scope: object, receive: object, send: object) -> None:  # never called
            raise AssertionError

        server = ConsoleServer(config, app)
        with pytest.raises(ConfigError, match=f"console.listen: cannot listen on 127.0.0.1:{port}"):
            server.start()
    finally:
        holder.close()
