"""The scale-out proof (`surge loadtest --cluster 3`): primary + pg_basebackup replica + PgBouncer + three engine
nodes, each in its own network namespace, behind HAProxy; the short deadline profile through the balancer while one
node is SIGKILLed and started again and another is cut off from the database for a while. The run's audit, the
operators' reconcile and ledger check, the processor's budget per second and a report from the replica must all
hold. About two minutes; needs root (namespaces) and PgBouncer/HAProxy (installed by deploy/install-services.sh)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from loadtest.cluster import ClusterConfig, run_cluster
from loadtest.cluster_services import ServicesUnavailableError

pytestmark = pytest.mark.slow


def _namespaces() -> set[str]:
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in listing.splitlines() if line.strip()}


@pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces (ip netns) need root")
async def test_three_nodes_behind_a_balancer_survive_a_kill_and_a_partition(tmp_path: Path) -> None:
    before = _namespaces()
    lines: list[str] = []
    config = ClusterConfig(nodes=3, report_folder=tmp_path / "report")
    try:
        results = await run_cluster(config, output=lines.append)
    except ServicesUnavailableError as error:
        pytest.skip(f"PgBouncer/HAProxy missing and not installable: {error}")
    cluster = results["cluster"]
    print("\n" + "\n".join(lines[-12:]))
    print({k: v for k, v in cluster.items() if k != "charges_per_second"}, results["totals"]["achieved_per_s"])
    audit = results["audit"]
    assert audit["ok"], audit["problems"]
    assert results["drain"]["drained"]
    assert cluster["charges_per_second_max"] <= cluster["budget_bound_per_s"]
    assert cluster["report_from_replica"]["replica_lag_ms"].isdigit()
    assert [event["event"].split()[0] for event in cluster["faults"]][:1] == ["SIGKILL"]
    assert len(cluster["faults"]) == 6  # kill, restart; link down, link up; graceful stop, restart
    # Every form got its final answer: retries (same Idempotency-Key) carried them through the kill and the cut.
    assert "error" not in results["client"]["final"] and "timeout" not in results["client"]["final"]
    assert _namespaces() == before  # every namespace it made is gone
