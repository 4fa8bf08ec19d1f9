"""Node faults on the local three-node cluster (deploy/local/cluster.sh): 50,000 events stream through
the worker while a Cassandra node, then a Kafka broker, is SIGKILLed and restarted. The scenario is
bench/cluster_faults.py's; this test owns the cluster's lifetime and the assertions."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.cluster_faults import PHASES, REPO, cluster_sh, run_scenario, table

pytestmark = [pytest.mark.integration, pytest.mark.cluster]

MIN_READS = 10  # every phase lasts 10 s or more and the poller reads 3-15 times a second: fewer means it stalled


@pytest.fixture(scope="module")
def cluster() -> Iterator[float]:
    """`cluster.sh up` (idempotent; its seconds are yielded), and `down` at the end unless
    FUSIONREC_CLUSTER_KEEP=1 (data stays either way; the test drops its own topics and keyspace)."""
    try:
        up_s = cluster_sh("up", timeout_s=900)
    except RuntimeError as exc:
        pytest.fail(str(exc))
    yield up_s
    if os.environ.get("FUSIONREC_CLUSTER_KEEP") != "1":
        cluster_sh("down", timeout_s=300)


@pytest.mark.timeout(1800)
def test_node_faults_lose_nothing_and_reads_keep_answering(
    cluster: float, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = run_scenario(tmp_path, n_events=50_000)
    report["cluster_up_s"] = round(cluster, 1)
    out = REPO / "out" / "cluster_faults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    with capsys.disabled():
        print(f"\ncluster up in {cluster:.1f} s\n{table(report)}\nreport: {out}")
    rows = {row["phase"]: row for row in report["phases"]}

    # exactly once: every user's stored state is the fold of exactly its events (run_scenario also ran
    # assert_folds_exactly, which raises on any difference)
    assert report["fold"] == {
        "users": report["fold"]["users"],
        "lost": 0,
        "double_counted": 0,
        "users_differing": 0,
        "exact": True,
    }
    assert report["worker_exit"] == 0

    # the stream was live through both faults, and the worker kept committing through each: one node of
    # three down still reaches LOCAL_QUORUM (2 of 3) and min.insync.replicas=2
    for phase in ("cassandra_fault", "kafka_fault"):
        assert rows[phase]["produced"] > 0, f"no events produced during {phase}: the scenario ran too fast"
        assert rows[phase]["committed"] > 0, f"the worker made no progress during {phase}: {rows[phase]}"

    # reads kept answering: no request failed (HTTP error, 5 s timeout, or the API's popular-items
    # fallback marked `degraded`), in any phase. Zero, not a bound: the API reads at LOCAL_QUORUM through a
    # token-aware driver that drops a killed node at once (its sockets close), and Kafka is not on the read path.
    for phase in PHASES:
        assert rows[phase]["reads"] >= MIN_READS, f"the poller stalled during {phase}: {rows[phase]}"
        assert rows[phase]["failed_reads"] == 0, f"reads failed during {phase}: {rows[phase]}"
