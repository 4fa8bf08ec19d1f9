"""Kafka runtime: a faust-streaming agent over the clickstream topic, in micro-batches.

faust lives only in this module. Each micro-batch is taken with acks disabled, processed by the
pipeline core in a worker thread (store calls block; the event loop keeps heartbeating), dead
letters are produced and confirmed, and only then are the events acked so faust may commit their
offsets. A crash therefore replays, and the user state's offset watermark makes the replay exact. Batch
N+1 is ranked while batch N is written (`Pipeline.prepare` / `Pipeline.write`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.codec import decode_item
from schemas.errors import InvalidItem
from streams.core import BatchOutcome, Pipeline, RawRecord
from streams.gc_tuning import tune_gc

__all__ = ["WorkerConfig", "build_app", "run_worker"]

log = logging.getLogger("fusionrec.worker")

try:
    import faust
except ImportError as exc:  # pragma: no cover
    raise ImportError("the Kafka worker needs faust-streaming: pip install 'fusionrec'") from exc


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    topic: str
    dead_letter_topic: str
    group: str
    batch_size: int = 500
    batch_within_s: float = 0.05
    commit_interval_s: float = 1.0
    datadir: str = ".local/faust"
    log_every_s: float = 5.0
    items_topic: str | None = None
    batches_in_flight: int = 2  # taken but not yet being processed (beyond the two in the pipeline)


class _Totals:
    """key=value progress lines every few seconds, and one at stop: one line per fact, not per batch."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self.records = self.applied = self.duplicates = self.dead = self.batches = 0
        self.started = self.last = time.monotonic()
        self.first_batch: float | None = None  # when records first arrived: startup is not throughput
        self.last_batch_end = self.started

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        active = max(self.last_batch_end - (self.first_batch or self.last_batch_end), 1e-9)
        return (
            f"records={self.records} applied={self.applied} duplicates={self.duplicates} "
            f"dead_letters={self.dead} batches={self.batches} elapsed_s={elapsed:.1f} "
            f"active_s={active:.2f} active_eps={self.records / active:.0f}"
        )

    def begin(self) -> None:
        if self.first_batch is None:
            self.first_batch = time.monotonic()

    def add(self, o: BatchOutcome) -> None:
        self.last_batch_end = time.monotonic()
        self.records += o.n_records
        self.applied += o.n_applied
        self.duplicates += o.n_duplicates
        self.dead += len(o.dead_letters)
        self.batches += 1
        now = time.monotonic()
        if now - self.last >= self.every_s:
            self.last = now
            log.info("worker_progress %s last_batch_ms=%.1f", self.line(), o.elapsed_s * 1000)


class _App(faust.App):
    """Tells the pipeline to stop waiting out a store outage as soon as shutdown begins."""

    def __init__(self, stopping: threading.Event, totals: _Totals, *args: Any, **kwargs: Any) -> None:
        self._fusionrec_stopping = stopping
        self._fusionrec_totals = totals
        super().__init__(*args, **kwargs)

    def on_init_dependencies(self) -> Any:
        """Without faust's Monitor sensor: per-event statistics for faust's web UI (off here), a
        tenth of the worker's event-loop time. Our own sensor (Prometheus) stays."""
        deps = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return deps

    async def on_stop(self) -> None:
        self._fusionrec_stopping.set()
        log.info("worker_stop %s", self._fusionrec_totals.line())
        await super().on_stop()


def build_app(cfg: WorkerConfig, pipeline: Pipeline, stopping: threading.Event, sensor: Any = None) -> Any:
    """The faust app with one agent; `sensor` (optional) also receives consumer lag per partition."""
    Path(cfg.datadir).mkdir(parents=True, exist_ok=True)
    totals = _Totals(cfg.log_every_s)
    app = _App(
        stopping,
        totals,
        cfg.group,
        broker=f"kafka://{cfg.bootstrap}",
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        datadir=cfg.datadir,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=cfg.commit_interval_s,
        producer_acks=-1,
        stream_buffer_maxsize=max(4 * cfg.batch_size, 4096),
    )
    source = app.topic(cfg.topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
    dead = app.topic(
        cfg.dead_letter_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pipeline")
    writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="writer")
    cache = pipeline.state_cache

    @app.on_partitions_assigned.connect
    async def log_assignment(_sender: Any, /, *args: Any, **__: Any) -> None:
        """Which partitions this worker owns after each rebalance (operators and tests read it)."""
        owned = sorted(f"{tp.topic}:{tp.partition}" for tp in (args[0] if args else ()))
        log.info("partitions_assigned count=%d partitions=%s", len(owned), ",".join(owned))

    if cache is not None:
        # faust pauses the partitions and waits for in-flight (unacked) batches before it revokes,
        # so after these no cached state from the old assignment is used (streams.state_cache)
        @app.on_partitions_revoked.connect
        async def forget_on_revoke(*_: Any, **__: Any) -> None:
            cache.invalidate()
            log.info("state_cache_invalidated reason=revoked generation=%d", cache.generation)

        @app.on_partitions_assigned.connect
        async def forget_on_assign(*_: Any, **__: Any) -> None:
            cache.invalidate()
            log.info("state_cache_invalidated reason=assigned generation=%d", cache.generation)

    def _report_failure(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("batch_write_failed error=%r (its events stay unacked and are replayed)", task.exception())

    async def finish(stream: Any, events: list[Any], written: asyncio.Future[BatchOutcome]) -> None:
        """After a batch's writes: dead letters confirmed by the broker, then the events acked (so
        faust may commit their offsets), then counters."""
        outcome = await written
        pending = []
        for d in outcome.dead_letters:
            headers = {
                "fusionrec.reason": d.reason.encode(),
                "fusionrec.field": d.field.encode(),
                "fusionrec.source": d.source.encode(),
                "fusionrec.offset": str(d.offset).encode(),
            }
            pending.append(await dead.send(key=f"{d.source}:{d.offset}".encode(), value=d.raw, headers=headers))
        for fut in pending:
            await fut  # confirmed by the broker before the source offsets may be committed
        for e in events:
            await stream.ack(e)
        totals.add(outcome)
        if sensor is not None:
            last: dict[Any, int] = {}
            for e in events:
                last[e.message.tp] = e.message.offset
            for tp, offset in last.items():
                high = app.consumer.highwater(tp)
                if high is not None:
                    sensor.set_lag(f"{tp.topic}:{tp.partition}", int(high) - offset - 1)

    async def run_batches(stream: Any, queue: asyncio.Queue[list[Any]]) -> None:
        """Two stages in flight: batch N+1 is decoded, folded and ranked (pipeline thread) while
        batch N is written (writer thread). Writes stay one at a time and in order, so a retried
        write never lands after a newer one; a batch is acked only after its own write."""
        loop = asyncio.get_running_loop()
        previous: asyncio.Task[None] | None = None
        while True:
            events = await queue.get()
            totals.begin()
            records = [
                RawRecord(
                    value=e.message.value if e.message.value is not None else b"",
                    source=f"{e.message.topic}:{e.message.partition}",
                    offset=e.message.offset,
                )
                for e in events
            ]
            prepared = await loop.run_in_executor(executor, pipeline.prepare, records)
            if previous is not None:
                await previous  # batch N written and acked (or its failure raised here)
            written = loop.run_in_executor(writer, pipeline.write, prepared)
            previous = asyncio.ensure_future(finish(stream, events, written))
            previous.add_done_callback(_report_failure)  # seen now, not only when the next batch comes

    @app.agent(source, concurrency=1)
    async def process(stream: Any) -> None:
        """Takes micro-batches and hands them to `run_batches` at once: faust fills its take buffer
        only while the agent waits in `noack_take`, so processing in the agent body would stop
        consumption for as long as each batch takes. At most `batches_in_flight` wait (a bounded
        queue: back-pressure), all unacked, so faust's rebalance waits for them."""
        queue: asyncio.Queue[list[Any]] = asyncio.Queue(maxsize=cfg.batches_in_flight)
        runner = asyncio.ensure_future(run_batches(stream, queue))
        try:
            async for events in stream.noack_take(cfg.batch_size, within=cfg.batch_within_s):
                put = asyncio.ensure_future(queue.put(list(events)))
                await asyncio.wait({put, runner}, return_when=asyncio.FIRST_COMPLETED)
                if runner.done():
                    put.cancel()
                    runner.result()  # the processing failed (e.g. stopped during an outage): raise it here
                    raise RuntimeError("batch runner ended")  # pragma: no cover - it loops forever
        finally:
            runner.cancel()

    if cfg.items_topic:
        items_source = app.topic(
            cfg.items_topic, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

        @app.agent(items_source, concurrency=1)
        async def live_items(stream: Any) -> None:
            """New or changed items: encoded and fused into the live index (same thread as the pipeline)."""
            loop = asyncio.get_running_loop()
            add = getattr(pipeline.ranker, "add_items", None)
            async for events in stream.noack_take(256, within=cfg.batch_within_s):
                good, bad = [], []
                for e in events:
                    try:
                        good.append(decode_item(e.message.value or b""))
                    except InvalidItem as invalid:
                        bad.append((e, invalid))
                for e, exc in bad:
                    headers = {
                        "fusionrec.reason": exc.reason.encode(),
                        "fusionrec.field": exc.field.encode(),
                        "fusionrec.source": f"{e.message.topic}:{e.message.partition}".encode(),
                        "fusionrec.offset": str(e.message.offset).encode(),
                    }
                    await (await dead.send(key=b"item", value=e.message.value or b"", headers=headers))
                if good and add is not None:
                    n = await loop.run_in_executor(executor, add, good)
                    log.info("live_items added=%d invalid=%d", n, len(bad))
                elif good:
                    log.warning("live_items_ignored count=%d reason=the ranker has no live index", len(good))
                for e in events:
                    await stream.ack(e)

    return app


def run_worker(
    cfg: WorkerConfig,
    pipeline_factory: Callable[[threading.Event], Pipeline],
    loglevel: str = "INFO",
    sensor: Any = None,
) -> None:
    """Run until SIGTERM/SIGINT; faust handles the signals and commits acked offsets on the way out."""
    stopping = threading.Event()
    pipeline = pipeline_factory(stopping)
    tune_gc()
    app = build_app(cfg, pipeline, stopping, sensor)
    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    log.info(
        "worker_start topic=%s group=%s bootstrap=%s batch_size=%d store=%s",
        cfg.topic,
        cfg.group,
        cfg.bootstrap,
        cfg.batch_size,
        pipeline.store.url,
    )
    worker.execute_from_commandline()
