"""Which shop a command runs on: a dataset folder, or the built-in synthetic shop when none is named."""

from __future__ import annotations

from collections.abc import Iterator

from schemas.codec import encode_event
from shopdata.loader import Dataset, load_dataset
from shopdata.synthetic import generate_shop

__all__ = ["SYNTHETIC", "event_records", "load_data"]

SYNTHETIC = "synthetic"


def load_data(data: str | None, limit_users: int | None = None) -> Dataset:
    """A dataset folder, or the built-in synthetic shop when none is given (or `synthetic`)."""
    if data is None or data in {"", SYNTHETIC}:
        return generate_shop()
    return load_dataset(data, limit_users=limit_users)


def event_records(dataset: Dataset) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs for Kafka: keyed by user so one user's events stay in order."""
    for ev in dataset.events:
        yield ev.user_id.encode(), encode_event(ev)
