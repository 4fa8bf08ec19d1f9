"""The node's warning on every spread UNLOGGED batch is logged once per process, not per batch;
other server warnings are logged as they come (streams.stores.cassandra._SpreadBatchWarnings)."""

from __future__ import annotations

import logging

import pytest

from streams.stores.cassandra import _SpreadBatchWarnings

SPREAD = (
    "Unlogged batch covering 16 partitions detected against tables [ks.recommendations, ks.user_state]. "
    "You should use a logged batch for atomicity, or asynchronous writes for performance."
)
TOO_LARGE = "Batch for [ks.recommendations] is of size 70.2KiB, exceeding specified threshold of 64.0KiB by 6.2KiB."


def test_the_spread_batch_warning_is_logged_once_and_the_rest_counted(caplog: pytest.LogCaptureFixture) -> None:
    driver = logging.getLogger("test.cassandra.protocol")
    quiet = _SpreadBatchWarnings()
    driver.addFilter(quiet)
    try:
        with caplog.at_level(logging.INFO):
            for _ in range(3):
                driver.warning("Server warning: %s", SPREAD)
            driver.warning("Server warning: %s", TOO_LARGE)
            driver.warning("Server warning: %s", SPREAD)
    finally:
        driver.removeFilter(quiet)
    server = [r.getMessage() for r in caplog.records if r.name == driver.name]
    assert server == [f"Server warning: {SPREAD}", f"Server warning: {TOO_LARGE}"]
    assert quiet.seen == 4 and quiet.suppressed == 3
    why = [r.getMessage() for r in caplog.records if r.name == "fusionrec.store"]
    assert len(why) == 1 and why[0].startswith("cassandra_spread_batch_warning shown=once")


def test_connecting_installs_the_filter_on_the_driver_s_logger_once() -> None:
    from streams.stores import cassandra

    cassandra._quiet_spread_batch_warnings()
    cassandra._quiet_spread_batch_warnings()
    assert logging.getLogger("cassandra.protocol").filters.count(cassandra._SPREAD_BATCHES) == 1
