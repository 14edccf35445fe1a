"""DICOM TLS (PS3.15 B.1) between the C-STORE destination and the listener; plaintext refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from copydicom.endpoints.dimse import DimseConfig, ListenerConfig
from copydicom.endpoints.dimse.listener import ListenerSource
from copydicom.endpoints.dimse.scu import DimseDestination
from copydicom.errors import DestinationUnavailable
from tests.integration.dimse.conftest import write_files
from tests.integration.dimse.test_destination import instance
from tests.support.orthanc import free_port


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A throw-away CA, a server certificate for 127.0.0.1 and a client certificate."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    for name, san in (("server", "IP:127.0.0.1"), ("client", "DNS:copydicom-client")):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(d / f"{name}.key"),
                 "-out", str(d / f"{name}.csr"))
        (d / f"{name}.ext").write_text(f"subjectAltName={san}\n")
        _openssl("x509", "-req", "-in", str(d / f"{name}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-extfile", str(d / f"{name}.ext"), "-out", str(d / f"{name}.pem"))
    return d


def tls_listener(tmp_path: Path, pki: Path, **tls: object) -> ListenerSource:
    cfg = ListenerConfig.from_mapping("rx", {
        "port": free_port(), "allowed_calling": ["COPYDICOM"], "spool": str(tmp_path / "spool"),
        "tls": {"cert": str(pki / "server.pem"), "key": str(pki / "server.key"), **tls},
    }, where="endpoints.rx")
    source = ListenerSource(cfg)
    source.listener.start()
    return source


def tls_node(port: int, pki: Path, *, client_cert: bool) -> DimseConfig:
    tls: dict[str, str] = {"ca": str(pki / "ca.pem")}
    if client_cert:
        tls.update(cert=str(pki / "client.pem"), key=str(pki / "client.key"))
    return DimseConfig.from_mapping("rx-tls", {"called_aet": "COPYDICOM", "host": "127.0.0.1", "port": port,
                                               "tls": tls, "timeout": "5s"}, where="endpoints.rx-tls")


def test_destination_to_listener_over_tls(tmp_path: Path, pki: Path) -> None:
    import socket

    source = tls_listener(tmp_path, pki)
    files = write_files(tmp_path / "in", 3)
    # A client that connects and never starts the TLS handshake must not hold up the others.
    stalled = socket.create_connection(("127.0.0.1", source.listener.port))
    try:
        destination = DimseDestination(tls_node(source.listener.port, pki, client_cert=False))
        try:
            for f in files:
                assert destination.store(instance(f)) == "stored"
        finally:
            destination.close()
        assert source.spool.depth()[0] == 3
        # A plaintext association to the TLS port never gets as far as an association.
        ae = AE(ae_title="COPYDICOM")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.network_timeout = 5
        plain = ae.associate("127.0.0.1", source.listener.port, ae_title="COPYDICOM")
        assert not plain.is_established
        assert source.listener.stats.associations == 1
    finally:
        stalled.close()
        source.close()


def test_required_client_certificate(tmp_path: Path, pki: Path) -> None:
    source = tls_listener(tmp_path, pki, ca=str(pki / "ca.pem"), require_client_cert=True)
    (f,) = write_files(tmp_path / "in", 1)
    try:
        anonymous = DimseDestination(tls_node(source.listener.port, pki, client_cert=False))
        with pytest.raises(DestinationUnavailable):
            anonymous.store(instance(f))
        mutual = DimseDestination(tls_node(source.listener.port, pki, client_cert=True))
        try:
            assert mutual.store(instance(f)) == "stored"
        finally:
            mutual.close()
    finally:
        source.close()
