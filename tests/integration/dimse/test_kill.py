"""SIGKILL of the listener while storescu pushes: nothing acknowledged is lost, nothing is sent twice."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
from pathlib import Path

import pytest

from tests.integration.dimse.conftest import new_instance_changes, wait_until, write_files
from tests.integration.dimse.test_listener import expected_ids, orthanc_dest
from tests.support.dcmtk import dcmtk_env, need, storescu
from tests.support.listen import ListenProcess, listener_config
from tests.support.orthanc import OrthancServer, free_port

N = 200


def acknowledged(output: str) -> set[str]:
    """Files storescu saw answered Success (``-v`` prints the file, then the response)."""
    done: set[str] = set()
    current: str | None = None
    for line in output.splitlines():
        sent = re.match(r"I: Sending file: (.+)$", line)
        if sent:
            current = sent.group(1).strip()
        elif current and "Received Store Response (Success)" in line:
            done.add(current)
            current = None
    return done


def receiver_pid(listen_pid: int) -> int:
    """The receiving child of a ``copydicom listen`` process (``receiver: process``)."""
    children: list[int] = []
    for task in os.listdir(f"/proc/{listen_pid}/task"):
        with open(f"/proc/{listen_pid}/task/{task}/children") as f:
            children += [int(c) for c in f.read().split()]
    (child,) = children
    return child


def gone(pid: int) -> bool:
    """Exited (absent, or a zombie waiting to be reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def _listening(listen_pid: int, old_child: int, port: int) -> bool:
    """A new receiving child runs and the port accepts connections again."""
    try:
        if receiver_pid(listen_pid) == old_child:
            return False
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except (ValueError, OSError):  # no child right now, or not bound yet
        return False


@pytest.mark.parametrize(("destination_up", "killed"),
                         [(True, "listen"), (False, "listen"), (True, "receiver")],
                         ids=["destination-up", "destination-down", "receiver-process"])
def test_sigkill_while_pushing_loses_nothing_acknowledged(tmp_path: Path, dest: OrthancServer,
                                                          destination_up: bool, killed: str) -> None:
    """With the destination down, every acknowledged instance is still in the spool when the listener dies.

    ``listen``: the whole ``copydicom listen`` (its receiving child dies with it); ``receiver``: only the
    receiving child, which the draining parent restarts.
    """
    files = write_files(tmp_path / "in", N, rows=128)
    if not destination_up:
        dest.stop()
    port = free_port()
    config = listener_config(tmp_path / "rx", port=port, destinations=orthanc_dest(dest), allowed_calling=["STORESCU"])
    spool = tmp_path / "rx" / "spool"
    listener = ListenProcess(config, port).start()
    args = [need("storescu"), "-v", "-R", "-aet", "STORESCU", "-aec", "COPYDICOM", "127.0.0.1", str(port)]
    pusher = subprocess.Popen(args + [str(f) for f in files], env=dcmtk_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        # Kill once some instances were acknowledged and while the push is still going.
        def delivered() -> int:
            return len(dest.instance_ids()) if destination_up else 0

        wait_until(lambda: len(list(spool.glob("*.dcm"))) + delivered() >= N // 4 or pusher.poll() is not None,
                   what="a quarter of the push")
        assert listener.process is not None
        child = receiver_pid(listener.process.pid)
        if killed == "listen":
            listener.kill()
            wait_until(lambda: gone(child), what="the receiving child to die with its parent")
        else:
            os.kill(child, signal.SIGKILL)
        in_spool = {p.name[: -len(".dcm")] for p in spool.glob("*.dcm")}
        left_in_spool = len(in_spool)
        output, _ = pusher.communicate(timeout=120)
    finally:
        if pusher.poll() is None:
            pusher.kill()
    acked = acknowledged(output)
    assert 0 < len(acked) < N, "the kill should land mid-push"
    assert pusher.returncode != 0
    print(f"acknowledged before the kill: {len(acked)}; waiting in the spool: {left_in_spool}")

    if not destination_up:
        # Every acknowledged instance is on disk (one more may be, whose answer the kill cut off).
        assert expected_ids([Path(a) for a in acked]) <= in_spool
        dest.start()
    if killed == "listen":
        listener = ListenProcess(config, port).start()  # restart: the spool is resumed
    else:  # the parent restarts its receiver
        assert listener.process is not None
        pid = listener.process.pid
        wait_until(lambda: gone(child) and _listening(pid, child, port), what="a new receiver")
    try:
        missing = [f for f in files if str(f) not in acked]
        for _ in range(3):  # the sender retries what was not acknowledged
            if not missing:
                break
            retry = storescu(port, missing, verbose=True)
            missing = [f for f in missing if str(f) not in acknowledged(retry.stdout + retry.stderr)]
        assert not missing
        wait_until(lambda: len(dest.instance_ids()) == N and not list(spool.glob("*.dcm")), timeout=120,
                   what=f"{N} instances at the destination and an empty spool")
    finally:
        listener.stop()
    assert set(dest.instance_ids()) == expected_ids(files)
    assert new_instance_changes(dest) == N  # exactly N deliveries: none twice
    assert not [p for p in os.listdir(spool) if p.startswith(".tmp-")]
