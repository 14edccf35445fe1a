"""The SeaweedFS testbench really checks signatures and listens on loopback only."""

from __future__ import annotations

import subprocess

import boto3
import pytest
from botocore.exceptions import ClientError

from tests.support.seaweedfs import SeaweedFSServer

pytestmark = pytest.mark.integration


def test_round_trip_with_the_right_key(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    client = seaweedfs.client()
    client.put_object(Bucket=bucket, Key="a/b.dcm", Body=b"DICM-ish")
    assert client.get_object(Bucket=bucket, Key="a/b.dcm")["Body"].read() == b"DICM-ish"


def test_a_wrong_secret_is_refused(seaweedfs: SeaweedFSServer, bucket: str) -> None:
    creds = seaweedfs.credentials() | {"aws_secret_access_key": "not-the-secret"}
    client = boto3.client("s3", **creds)
    with pytest.raises(ClientError) as info:
        client.put_object(Bucket=bucket, Key="x", Body=b"1")
    assert info.value.response["Error"]["Code"] == "SignatureDoesNotMatch"


def test_every_port_is_bound_to_loopback(seaweedfs: SeaweedFSServer) -> None:
    assert seaweedfs.process is not None
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    mine = [line.split()[3] for line in out.splitlines() if f"pid={seaweedfs.process.pid}," in line]
    assert sorted(int(addr.rsplit(":", 1)[1]) for addr in mine) == sorted(seaweedfs.ports.values())
    assert {addr.rsplit(":", 1)[0] for addr in mine} == {"127.0.0.1"}
