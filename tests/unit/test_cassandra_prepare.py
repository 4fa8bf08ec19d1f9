"""A node that has not yet applied a just-created table must not fail the worker's start (CI stop 21)."""

from __future__ import annotations

import pytest
from cassandra import InvalidRequest

from streams.stores import cassandra as store


class LaggingNode:
    """Answers "does not exist" `lag` times, then prepares."""

    def __init__(self, lag: int, message: str = "table item_tags does not exist") -> None:
        self.lag, self.message, self.calls = lag, message, 0

    def prepare(self, cql: str) -> str:
        self.calls += 1
        if self.calls <= self.lag:
            raise InvalidRequest(self.message)
        return f"prepared:{cql}"


@pytest.fixture(autouse=True)
def no_sleep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store.time, "sleep", lambda _s: None)


def test_patient_prepare_waits_for_the_schema() -> None:
    node = LaggingNode(lag=3)
    assert store._prepare(node, "SELECT 1", patient=True) == "prepared:SELECT 1"  # type: ignore[arg-type]
    assert node.calls == 4


def test_impatient_prepare_reports_the_missing_table_at_once() -> None:
    node = LaggingNode(lag=3)
    with pytest.raises(InvalidRequest, match="does not exist"):
        store._prepare(node, "SELECT 1", patient=False)  # type: ignore[arg-type]
    assert node.calls == 1


def test_other_errors_are_not_retried() -> None:
    node = LaggingNode(lag=3, message="line 1:7 no viable alternative")
    with pytest.raises(InvalidRequest, match="no viable"):
        store._prepare(node, "SELEC 1", patient=True)  # type: ignore[arg-type]
    assert node.calls == 1


def test_patient_prepare_gives_up_at_the_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter(range(0, 1000, 10))
    monkeypatch.setattr(store.time, "monotonic", lambda: float(next(clock)))
    node = LaggingNode(lag=10_000)
    with pytest.raises(InvalidRequest):
        store._prepare(node, "SELECT 1", patient=True)  # type: ignore[arg-type]
    assert node.calls == int(store.SCHEMA_AGREEMENT_S // 10)
