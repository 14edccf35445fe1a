"""Start and stop private Orthanc servers on loopback, for tests, the demo and benchmarks.

Each server gets a generated JSON configuration and storage in its own
temporary directory, free loopback ports, and is stopped by its PID.
The system service of the Debian package is never used.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ORTHANC_BINARIES = ("/usr/sbin/Orthanc", "Orthanc")
#: Where the Debian package orthanc-dicomweb puts the DICOMweb plugin.
DICOMWEB_PLUGINS = (
    "/usr/share/orthanc/plugins/libOrthancDicomWeb.so",
    "/usr/lib/orthanc/libOrthancDicomWeb.so.1.7",
)


def free_port() -> int:
    """Return a TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_dicomweb_plugin() -> str:
    """Return the path of Orthanc's DICOMweb plugin or raise ``FileNotFoundError``."""
    for candidate in DICOMWEB_PLUGINS:
        if os.path.exists(candidate):
            return candidate
    raise FileNotFoundError(
        "the Orthanc DICOMweb plugin is not installed: run 'apt-get update && apt-get install -y orthanc-dicomweb'"
    )


def find_orthanc() -> str:
    """Return the path of the Orthanc executable or raise ``FileNotFoundError``."""
    for candidate in ORTHANC_BINARIES:
        path = shutil.which(candidate)
        if path:
            return path
    raise FileNotFoundError(
        "Orthanc is not installed: run 'apt-get update && apt-get install -y orthanc'"
    )


@dataclass
class OrthancServer:
    """One private Orthanc process.

    Parameters
    ----------
    name
        Its DICOM AET and a label in logs.
    workdir
        Where its configuration, storage and log live (a new temp dir if ``None``).
    user, password
        HTTP basic-auth credentials that the server requires.
    peers
        ``{name: url}`` of other Orthanc servers, for ``/peers/{name}/store``.
    modalities
        ``{name: (AET, host, port)}`` of DICOM nodes, for ``/modalities/{name}/store``
        (``DicomModalities``).
    dicomweb
        Load the DICOMweb plugin (QIDO-RS, WADO-RS, STOW-RS under ``/dicom-web``).
    extra
        More configuration keys, merged last.
    """

    name: str = "ORTHANC"
    workdir: Path | None = None
    user: str = "orthanc"
    password: str = "orthanc"
    peers: dict[str, str] = field(default_factory=dict)
    modalities: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    dicomweb: bool = False
    http_port: int = 0
    dicom_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    _own_workdir: bool = False

    @property
    def url(self) -> str:
        """Base URL without credentials."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def url_with_credentials(self) -> str:
        """CopyDICOM-style URL with the credentials inline (tests and demo only)."""
        return f"http://{self.user}:{self.password}@127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """``dicomweb+http://user:pass@127.0.0.1:port/dicom-web`` (tests only: credentials inline)."""
        return f"dicomweb+http://{self.user}:{self.password}@127.0.0.1:{self.http_port}/dicom-web"

    @property
    def auth(self) -> tuple[str, str]:
        return (self.user, self.password)

    def config(self) -> dict[str, Any]:
        """The JSON configuration written for this server."""
        assert self.workdir is not None
        cfg: dict[str, Any] = {
            "Name": self.name,
            "StorageDirectory": str(self.workdir / "storage"),
            "IndexDirectory": str(self.workdir / "storage"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": self.name[:16],
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": True,
            "RegisteredUsers": {self.user: self.password},
            "HttpCompressionEnabled": True,
            "StorageCompression": False,
            "ConcurrentJobs": 2,
            "HttpThreadsCount": 50,
            "Plugins": [],
            "OrthancPeers": {
                peer: {"Url": url, "Username": self.user, "Password": self.password}
                for peer, url in self.peers.items()
            },
            "DicomModalities": {name: list(node) for name, node in self.modalities.items()},
            "StableAge": 2,
            "OverwriteInstances": False,
        }
        if self.dicomweb:
            cfg["Plugins"] = [find_dicomweb_plugin()]
            cfg["DicomWeb"] = {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Ssl": False,
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            }
        cfg.update(self.extra)
        return cfg

    def start(self, timeout: float = 30.0) -> OrthancServer:
        """Write the config, start the process, and wait until the REST API answers."""
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix=f"copydicom-orthanc-{self.name.lower()}-"))
            self._own_workdir = True
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.http_port:
            self.http_port = free_port()
        if not self.dicom_port:
            self.dicom_port = free_port()
        config_path = self.workdir / "orthanc.json"
        config_path.write_text(json.dumps(self.config(), indent=2))
        with open(self.workdir / "orthanc.log", "ab") as log:
            self.process = subprocess.Popen(
                [find_orthanc(), str(config_path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"Orthanc {self.name} exited with {self.process.returncode}; "
                    f"see {self.workdir / 'orthanc.log'}"
                )
            try:
                if requests.get(self.url + "/system", auth=self.auth, timeout=1).ok:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"Orthanc {self.name} did not answer within {timeout} s")

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process by its PID (SIGTERM, then SIGKILL)."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same ports with the same storage."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        """Stop, and remove the working directory if we created it."""
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    # -- small REST helpers for tests, demo and benchmarks ------------------------------

    def get(self, path: str, **kwargs: Any) -> Any:
        reply = requests.get(self.url + path, auth=self.auth, timeout=60, **kwargs)
        reply.raise_for_status()
        return reply.json()

    def upload(self, data: bytes) -> dict[str, Any]:
        reply = requests.post(
            self.url + "/instances",
            data=data,
            auth=self.auth,
            headers={"Content-Type": "application/dicom"},
            timeout=60,
        )
        reply.raise_for_status()
        result: dict[str, Any] = reply.json()
        return result

    def instance_ids(self) -> list[str]:
        ids: list[str] = self.get("/instances")
        return ids

    def statistics(self) -> dict[str, Any]:
        stats: dict[str, Any] = self.get("/statistics")
        return stats

    def clear(self) -> None:
        """Delete every patient (and so every instance)."""
        for patient in self.get("/patients"):
            requests.delete(self.url + f"/patients/{patient}", auth=self.auth, timeout=60)

    def __enter__(self) -> OrthancServer:  # noqa: PYI034
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
