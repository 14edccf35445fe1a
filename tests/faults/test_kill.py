"""Issue 7, item 6: SIGKILL the daemon at 10 random moments while it replicates 2,000 instances.

The route de-identifies, so the expected destination content is the source's
SOP Instance UIDs mapped through the keyed UID of the same project key.
Every kill happens at a random destination count (one per tenth of the run),
the daemon is restarted at once, and the ledger's checkpoint is sampled
between kills: it must never move backwards.  The destination overwrites
re-sent instances, so each re-send shows as a second ``NewInstance`` change.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from copydicom.stages.deid import load_key
from copydicom.stages.deid._keyed import keyed_uid
from tests.support.orthanc import OrthancServer
from tests.faults.conftest import figure, route_config
from tests.integration.conftest import (
    DaemonProcess,
    changes_of,
    checkpoint_of,
    instance_count,
    last_seq,
    load_ct,
    wait_until,
)

pytestmark = [pytest.mark.faults, pytest.mark.integration]

TOTAL = 2000
KILLS = 10


def sop_uids(server: OrthancServer) -> list[str]:
    reply = requests.post(
        server.url + "/tools/find", auth=server.auth, timeout=120,
        json={"Level": "Instance", "Query": {}, "Expand": True},
    )
    reply.raise_for_status()
    return [item["MainDicomTags"]["SOPInstanceUID"] for item in reply.json()]


def test_sigkill_ten_times_during_2000_instances(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, deid_key: Path,
    daemon: Callable[[Path], DaemonProcess],
) -> None:
    source, dest = servers
    seed = int(os.environ.get("CD_FAULT_SEED", random.randrange(1 << 30)))
    rng = random.Random(seed)
    dest_start = last_seq(dest)
    state = tmp_path / "state.db"
    config = route_config(tmp_path, source, dest, key=deid_key, workers=4, poll_seconds=0.5)
    load_ct(source, TOTAL, seed="kill", rows=32, series=10)
    key = load_key(deid_key)
    expected = {keyed_uid(key, uid) for uid in sop_uids(source)}
    assert len(expected) == TOTAL

    # One kill at a random destination count within each tenth of the run (after the first 2 %).
    span = (TOTAL - 60) / KILLS
    targets = [int(40 + span * i + rng.random() * span * 0.8) for i in range(KILLS)]
    seen: list[int] = []
    at_kills: list[int] = []
    started = time.monotonic()
    proc = daemon(config)
    for target in targets:
        def reached(target: int = target, proc: DaemonProcess = proc) -> bool:
            cp = checkpoint_of(state, "copy")
            if cp is not None:
                seen.append(cp)
            return instance_count(dest) >= target or not proc.running()

        wait_until(reached, timeout=120, what=f"{target} instances at the destination", interval=0.02)
        assert proc.running(), "the daemon died by itself:\n" + proc.log()
        proc.kill()
        at_kills.append(instance_count(dest))
        cp = checkpoint_of(state, "copy")
        if cp is not None:
            seen.append(cp)
        proc = daemon(config)
    assert max(at_kills) < TOTAL, f"the run finished before the last kill ({at_kills})"

    def done() -> bool:
        cp = checkpoint_of(state, "copy")
        if cp is not None:
            seen.append(cp)
        return instance_count(dest) >= TOTAL and cp == last_seq(source)

    wait_until(done, timeout=180, what="the run to finish after the last restart", interval=0.2)
    elapsed = time.monotonic() - started
    proc.kill()

    got = sop_uids(dest)
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=dest_start)]
    resent = len(received) - len(set(received))
    backwards = sum(1 for a, b in itertools.pairwise(seen) if b < a)
    figure(
        "kill", seed=seed, kills=len(at_kills), instances=TOTAL, kill_points=",".join(map(str, at_kills)),
        resends=resent, checkpoint_samples=len(seen), seconds=f"{elapsed:.1f}",
    )
    assert len(got) == TOTAL and set(got) == expected, "the destination does not hold exactly the source"
    assert resent == 0, f"{resent} instance(s) were sent twice"
    assert len(received) == TOTAL
    assert backwards == 0, "the checkpoint moved backwards"
    assert "Traceback" not in proc.log()
