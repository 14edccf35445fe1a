"""A route's ``reconcile: {on_start}`` schedule in cluster mode: run by the planner that leads the route only.

Real PostgreSQL, RabbitMQ and two Orthanc servers; ``copydicom run --role planner|worker`` processes. Instances
deleted at the destination behind copydicom's back (the ledger still says delivered, so the feed would never
send them again) are restored by the on_start reconcile of the planner that takes the lead; the standby runs
nothing while it stands by; the run is recorded for ``status``.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest
import requests
import yaml

from tests.integration.conftest import last_seq, wait_until
from tests.support.cluster import ClusterBench
from tests.support.orthanc import OrthancServer
from tests.support.postgres import PostgresServer
from tests.support.rabbitmq import RabbitServer
from tests.support.synthetic import ct_dataset, ct_study_files, to_bytes, upload_all

pytestmark = pytest.mark.integration

LINE = "reconcile (on start)"


def test_the_leading_planner_restores_what_the_destination_lost_and_the_standby_does_not_reconcile(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    source, dest = servers
    today = datetime.now(timezone.utc).strftime("%Y%m%d")
    recent_files = []
    for i in range(4):
        ds = ct_dataset(9, 0, 0, i, rows=8, cols=8, seed="cluster-recent")
        ds.StudyDate = today
        recent_files.append(to_bytes(ds))
    upload_all(source.upload, recent_files)
    upload_all(source.upload, ct_study_files(3, rows=8, cols=8, seed="cluster-old"))  # StudyDate in 2025
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest, batch_size=2, workers=1)
    data = yaml.safe_load(bench.config.read_text())
    data["routes"][0]["reconcile"] = {"on_start": "24h"}
    bench.config.write_text(yaml.safe_dump(data))
    try:
        first = bench.start("planner")
        wait_until(lambda: "leading (generation" in first.log(), timeout=60, what="the first planner to lead\n"
                   + bench.logs())
        standby = bench.start("planner")
        bench.start("worker")
        wait_until(lambda: len(dest.instance_ids()) == 7 and bench.checkpoint() == last_seq(source), timeout=90,
                   what="the first 7 instances\n" + bench.logs())
        wait_until(lambda: LINE in first.log(), timeout=30, what="the leader's on_start reconcile\n" + bench.logs())
        assert standby.running()
        assert LINE not in standby.log(), "a standby planner ran the reconcile\n" + bench.logs()

        # behind copydicom's back, one recent and one old instance disappear from the destination
        recent = [i for i in dest.instance_ids()
                  if dest.get(f"/instances/{i}/simplified-tags").get("StudyDate") == today]
        old = [i for i in dest.instance_ids() if i not in recent]
        assert len(recent) == 4 and len(old) == 3
        for victim in (recent[0], old[0]):
            requests.delete(f"{dest.url}/instances/{victim}", auth=dest.auth, timeout=30).raise_for_status()
        assert LINE not in standby.log(), "a standby planner ran the reconcile\n" + bench.logs()

        # the leader dies: the standby takes the lease and runs the route's on_start reconcile
        first.kill()
        wait_until(lambda: recent[0] in set(dest.instance_ids()), timeout=90,
                   what="the recent instance restored by the new leader\n" + bench.logs())
        wait_until(lambda: LINE in standby.log(), timeout=30, what="the new leader's log line")
        assert first.log().count(LINE) == 1 and standby.log().count(LINE) == 1
        assert old[0] not in set(dest.instance_ids())  # on_start covers studies dated in the window only
        assert len(dest.instance_ids()) == 6
        generation, holder = bench.sql("SELECT generation, holder FROM cluster_fence WHERE name = %s",
                                       (bench.route,))[0]
        assert generation >= 2 and holder.endswith(f":{standby.pid}")
        runs = bench.sql("SELECT missing, repaired, dry_run FROM reconcile_runs WHERE route = %s", (bench.route,))
        assert runs == [(1, 1, False)], runs
        assert bench.sql("SELECT count(*) FROM quarantine") == [(0,)]
        done = subprocess.run([sys.executable, "-m", "copydicom.cli", "status", "--config", str(bench.config)],
                              env=bench.env, capture_output=True, text=True, timeout=60)
        assert done.returncode in (0, 1), done.stderr
        assert "last reconcile:" in done.stdout and "missing=1" in done.stdout, done.stdout
    finally:
        bench.stop_all()
