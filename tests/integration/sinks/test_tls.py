"""TLS with a CA bundle: the Elasticsearch sink trusts only the given CA."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest

from copydicom.errors import ConfigError
from copydicom.sinks.elasticsearch import ElasticsearchConfig, ElasticsearchIndex
from copydicom.sinks.splunk import SplunkConfig, SplunkIndex
from tests.support.fake_elasticsearch import FakeElasticsearch
from tests.support.fake_splunk import FakeSplunk
from tests.unit.sinks.docs_helpers import instance_doc

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca, key, csr, cert = (d / n for n in ("ca.key", "ca.pem", "srv.key", "srv.csr", "srv.pem"))
    run = lambda *a: subprocess.run(["openssl", *a], check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
        "-subj", "/CN=copydicom test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=127.0.0.1")
    ext = d / "ext.cnf"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "2", "-extfile", str(ext))
    return ca, cert, key


def _server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    return ctx


def test_elasticsearch_tls_with_ca_bundle(pki: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pki
    fake = FakeElasticsearch()
    fake.ssl_context = _server_context(cert, key)
    fake.start()
    try:
        ok = ElasticsearchIndex(ElasticsearchConfig.from_url(
            f"es+https://127.0.0.1:{fake.port}/dicom?ca_certs={ca}&max_retries=0"))
        ok.send([instance_doc(1)])
        assert len(fake.docs("dicom")) == 1
        untrusted = ElasticsearchIndex(ElasticsearchConfig.from_url(
            f"es+https://127.0.0.1:{fake.port}/dicom?max_retries=0"))
        with pytest.raises(ConfigError, match="TLS verification failed"):
            untrusted.send([instance_doc(2)])
    finally:
        fake.stop()


def test_splunk_hec_tls_with_ca_bundle(pki: tuple[Path, Path, Path]) -> None:
    ca, cert, key = pki
    fake = FakeSplunk(token="t")
    fake.hec.ssl_context = _server_context(cert, key)
    fake.start()
    try:
        cfg = SplunkConfig(name="s", hec_url=fake.hec_url, hec_token="t", index="main", ca_certs=str(ca))
        SplunkIndex(cfg).send([instance_doc(1)])
        assert len(fake.events) == 1
        bad = SplunkConfig(name="s", hec_url=fake.hec_url, hec_token="t", index="main", max_retries=0)
        with pytest.raises(ConfigError, match="TLS verification failed"):
            SplunkIndex(bad).send([instance_doc(2)])
    finally:
        fake.stop()
