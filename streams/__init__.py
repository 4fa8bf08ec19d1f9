"""The pipeline core (pure) and its runtimes: faust (Kafka) and embedded (file replay + SQLite)."""

from streams.core import BatchOutcome, Pipeline, RawRecord, RetryPolicy

__all__ = ["BatchOutcome", "Pipeline", "RawRecord", "RetryPolicy"]
