"""Embedded runtime: replays a file of events through the same pipeline, in-process (SQLite by
default). Dead letters go to a `DeadLetterStore`, where the Kafka runtime has a dead-letter topic."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from schemas.progress import progress as progress_bar
from streams.core import BatchOutcome, Pipeline, RawRecord
from streams.stores.base import DeadLetterStore

__all__ = ["EmbeddedReport", "records_from_values", "run_embedded"]

log = logging.getLogger("fusionrec.embedded")


@dataclass
class EmbeddedReport:
    records: int = 0
    applied: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    users_updated: int = 0
    elapsed_s: float = 0.0

    @property
    def events_per_s(self) -> float:
        return self.records / self.elapsed_s if self.elapsed_s > 0 else 0.0


def records_from_values(values: Iterable[bytes], source: str, start_offset: int = 0) -> Iterator[RawRecord]:
    for offset, value in enumerate(values, start=start_offset):
        yield RawRecord(value=value, source=source, offset=offset)


def _batches(records: Iterable[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    batch: list[RawRecord] = []
    for rec in records:
        batch.append(rec)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def run_embedded(
    records: Iterable[RawRecord],
    pipeline: Pipeline,
    dead_letters: DeadLetterStore,
    *,
    batch_size: int = 500,
    total: int | None = None,
    progress: bool = True,
) -> EmbeddedReport:
    """Feed records in micro-batches through `pipeline` (which writes results to its own store);
    each batch's dead letters are kept in `dead_letters` (often the same store)."""
    report = EmbeddedReport()
    started = time.perf_counter()
    with progress_bar(total=total, unit="ev", desc="replay (embedded)", enabled=progress) as bar:
        for batch in _batches(records, batch_size):
            outcome: BatchOutcome = pipeline.process(batch)
            if outcome.dead_letters:
                dead_letters.put_dead_letters(outcome.dead_letters)
            report.records += outcome.n_records
            report.applied += outcome.n_applied
            report.duplicates += outcome.n_duplicates
            report.dead_letters += len(outcome.dead_letters)
            report.users_updated += outcome.n_users
            bar.update(len(batch))
    report.elapsed_s = time.perf_counter() - started
    log.info(
        "embedded_replay records=%d applied=%d duplicates=%d dead_letters=%d elapsed_s=%.2f eps=%.0f",
        report.records,
        report.applied,
        report.duplicates,
        report.dead_letters,
        report.elapsed_s,
        report.events_per_s,
    )
    return report
