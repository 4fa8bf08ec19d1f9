"""The one error tree of fusionrec, so callers can catch by meaning, not by library.

FusionrecError
 ├── InvalidRecord          bad input: names the field and the reason (goes to the dead-letter topic)
 │    ├── InvalidEvent
 │    └── InvalidItem
 ├── StoreUnavailable       a store cannot be reached now: retry later (back-pressure), never drop
 ├── ServiceError           local Kafka/Cassandra could not be started or reached
 ├── ConfigError            settings that cannot work, with what to change
 │    └── BundleError        a model bundle that is missing, altered, incomplete or too old; names the file
 └── DataError              a data file (dataset, items, reviews) that cannot be read as given:
                            names the file, the line or byte offset, and what to fix
"""

from __future__ import annotations

__all__ = [
    "BundleError",
    "ConfigError",
    "DataError",
    "FusionrecError",
    "InvalidEvent",
    "InvalidItem",
    "InvalidRecord",
    "ServiceError",
    "StoreUnavailable",
]


class FusionrecError(Exception):
    """Root of every error fusionrec raises on purpose."""


class InvalidRecord(FusionrecError):
    """A record that breaks its contract; `field` and `reason` say exactly how."""

    kind = "record"

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"invalid {self.kind}: field '{field}': {reason}")


class InvalidEvent(InvalidRecord):
    kind = "event"


class InvalidItem(InvalidRecord):
    kind = "item"


class StoreUnavailable(FusionrecError):
    """The store did not answer; the caller should pause and retry, not drop data."""


class ServiceError(FusionrecError):
    """A local service could not be started, stopped or reached."""


class ConfigError(FusionrecError):
    """Settings that cannot work; the message says what to change."""


class BundleError(ConfigError):
    """A model bundle that cannot be loaded as it is (not a bundle, a broken manifest, a file that is
    missing or does not match its digest, a bundle from an older format); the message names the file
    and says what to do (retrain or restore)."""


class DataError(FusionrecError):
    """A data file that cannot be read as given; the message names the file, where, and what to fix."""
