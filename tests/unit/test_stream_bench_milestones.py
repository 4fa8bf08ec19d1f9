"""bench/stream.py's account of a restart: seconds from the kill to each step the new worker logs."""

from __future__ import annotations

import time

from bench.stream import _milestones

LOG = """\
[2026-12-05 12:26:03,117] [25336] [INFO] batch_first n=1 records=500 users=29 ms=103
2026-12-05 12:26:09,568 INFO fusionrec.worker worker_ready warm_s=0.61 ranker_s=0.33
[2026-12-05 12:26:09,776] [25418] [INFO] partitions_assigned count=6 partitions=t:0
[2026-12-05 12:26:09,929] [25418] [INFO] batch_first n=1 records=500 users=29 ms=103
[2026-12-05 12:26:10,118] [25418] [INFO] batch_first n=2 records=500 users=488 ms=224
a line without a time: worker_ready
"""


def test_milestones_count_from_the_event_and_skip_what_came_before() -> None:
    killed = time.mktime(time.strptime("2026-12-05 12:26:07", "%Y-%m-%d %H:%M:%S")) + 0.5
    got = _milestones([LOG], killed)
    assert got == {"worker_ready": 2.068, "partitions_assigned": 2.276, "first_batch": 2.429}  # not 12:26:03's


def test_milestones_take_the_earliest_over_every_log() -> None:
    killed = time.mktime(time.strptime("2026-12-05 12:26:09", "%Y-%m-%d %H:%M:%S"))
    spare = "2026-12-05 12:26:09,200 INFO fusionrec.spare spare_worker_active pid=7 cold=0 replaced=6 returncode=-9\n"
    got = _milestones([LOG, spare], killed)
    assert got["takeover"] == 0.2 and got["worker_ready"] == 0.568


def test_the_shed_share_adds_the_workers_stop_lines_up() -> None:
    from bench.stream import _shed_share

    first = "worker_stop records=9 batches=3 stage_shed_batches=1 users=300 stage_shed_users=30"
    second = "worker_stop records=9 batches=3 stage_shed_batches=2 users=100 stage_shed_users=90"
    assert _shed_share([first, second]) == 0.3
    assert _shed_share([first, None]) == 0.1
    assert _shed_share([None, "worker_stop records=0 stage_shed_batches=0"]) is None  # a worker of an older commit
