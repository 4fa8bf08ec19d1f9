"""Kafka runtime: the faust-streaming adapter that feeds the clickstream to a `BatchRunner`.

faust lives only in this module: the app, its topics, and two agents that feed micro-batches to the
runner (streams.batch_runner): the items topic's through faust's stream (`noack_take`), the
clickstream's straight from the consumer's fetch loop (`_Consumer`, `bulk_batches`). The runner
acks each message only after its batch's writes and dead letters are confirmed, so faust commits
only written offsets. A crash therefore replays, and the user state's offset watermark makes the
replay exact.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

from threadpoolctl import threadpool_limits

from streams.background import Background
from streams.batch_runner import BatchRunner, LagSensor, ReadySensor, TopicPartition, warm_up
from streams.core import Pipeline
from streams.faust_import import NoHttpClient, import_faust
from streams.gc_tuning import tune_gc
from streams.kafka_config import kafka_client_config
from streams.settings import KafkaSettings, WorkerSettings
from streams.static_leave import install as install_static_leave

try:
    import_faust()  # without aiohttp, which the worker never uses (0.1 s of its start)
    import faust
    from faust.tables import TableManager
    from faust.transport.consumer import CONSUMER_FETCHING
    from faust.transport.drivers import aiokafka as faust_kafka
    from faust.types import TP
except ImportError as exc:  # pragma: no cover
    raise ImportError("the Kafka worker needs faust-streaming: pip install 'fusionrec'") from exc

__all__ = ["build_app", "run_worker"]

log = logging.getLogger("fusionrec.worker")

#: behind by more than a batch, up to this many taken batches are processed as one (a backlog
#: after a start or a burst drains with fewer per-batch fixed costs; streams.batch_runner.batch_limit)
DRAIN_FACTOR = 4

#: a worker that dies without leaving the group (SIGKILL, OOM, a lost host) holds its partitions
#: until its session expires: faust's default of 60 s was a minute of stale lists after each such
#: restart (bench/stream.py --restart-at). Heartbeats run on the event loop, which the batch
#: runner keeps free (its work is on two threads).
SESSION_TIMEOUT_S = 10.0
#: a member learns that the group is rebalancing (a worker joined or left) from a heartbeat's answer:
#: every 2 s, each join or leave held every partition of the group for up to that long before the
#: members even started to rejoin. Two small requests a second per worker are nothing beside its fetches.
HEARTBEAT_INTERVAL_S = 0.5


class _TablelessManager(TableManager):
    """faust's table manager sleeps 1 s at every start so that tables declared late can register
    before the consumer subscribes; this app declares none, and that second was a fifth of a
    restarted worker's time before its first batch (every restart, deploy and rebalance join)."""

    async def on_start(self) -> None:
        if len(self):  # tables after all: faust's own wait
            await super().on_start()
        elif not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


#: the fetch loop lets the event loop run (heartbeats, acks, the runner) every this many messages
YIELD_EVERY = 100


#: fetched batches of the clickstream waiting for the batch runner (each up to the fetch size); when
#: full, the fetch loop waits: Kafka keeps the backlog (back-pressure)
BULK_QUEUE_BATCHES = 8


class _Taken:
    """A clickstream message handed to the batch runner straight from the fetch loop (what the
    runner reads of a faust event: its `.message`)."""

    __slots__ = ("message",)

    def __init__(self, message: Any) -> None:
        self.message = message


class _Consumer(faust_kafka.Consumer):
    """faust's Kafka consumer with a fetch loop that costs less per message.

    faust delivers each fetched message under `wait_first(callback(m), suspend_flow.wait())`: four
    tasks made and three cancelled per message, so that a rebalance can interrupt a delivery blocked
    on a full stream buffer; then the topic callback decodes it into an event, puts it in the agent's
    stream buffer, and the stream's iterator and `take` pass it on one by one. Profiled at 1,000
    events/s (py-spy --gil), faust's per-message path held the GIL for about half of the wall time
    and the ranking thread waited for it. Here:
    - the whole fetched batch is delivered inside one such guard: a rebalance still interrupts it;
    - messages of a bulk topic (`app.fusionrec_bulk`: topic -> sink; the clickstream) are handed to
      the sink as one list, skipping the event, the stream buffer and the stream (`bulk_batches`
      does the stream's checks); other topics (the items topic) go through faust's callback.
    The read offsets, gap tracking and commit-every rules are faust's, per message."""

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - needs a broker (stream tests)
        callback = self.callback
        should_stop = self._stopped.is_set
        fetcher_should_stop = fetcher._stopped.is_set
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        sinks: dict[str, Callable[[list[Any]], Any]] = getattr(self.app, "fusionrec_bulk", {})

        async def deliver(messages: list[tuple[TP, Any]]) -> None:
            taken: dict[str, list[Any]] = {}
            for i, (tp, message) in enumerate(messages):
                if i and not i % YIELD_EVERY:
                    await asyncio.sleep(0)
                offset = message.offset
                last = read_offset[tp]
                if last is not None and offset < last:
                    continue  # read already (faust drops these too)
                if last and offset - last > 1 and acks_enabled_for(message.topic):
                    await self._add_gap(tp, last + 1, offset)
                if self._commit_every is not None and self._n_acked >= self._commit_every:
                    self._n_acked = 0
                    await self.commit()
                if message.topic in sinks:
                    taken.setdefault(message.topic, []).append(message)
                else:
                    await callback(message)
                read_offset[tp] = offset
            for topic, batch in taken.items():
                await sinks[topic](batch)

        try:
            while not (should_stop() or fetcher_should_stop()):
                self.diag.set_flag(CONSUMER_FETCHING)
                fetched = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany can return at once many times in a row
                if not self.should_stop:
                    messages = [pair async for pair in fetched]
                    if messages:
                        await self.wait_first(deliver(messages), self.suspend_flow.wait())
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:  # faust's tuple of exception classes
            if self.transport.app.should_stop:
                return  # the broker stopped the consumer as the app stops
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


def _admit(app: Any, message: Any) -> bool:
    """faust's stream checks, per message, as the runner takes it: one fetched before a rebalance
    (another group generation, or the flow suspended) is skipped (the new assignment reads it again
    from the committed offset); one taken is tracked as unacked, so that a rebalance waits for its
    write before the partition moves."""
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        return False
    app.consumer.track_message(message)
    return True


async def bulk_batches(
    queue: Any, size: int, within_s: float, admit: Callable[[Any], bool]
) -> AsyncIterator[list[_Taken]]:
    """Micro-batches of at most `size` messages from `queue` (lists of messages, as fetched) that
    `admit` lets through: what is fetched already goes at once; a short batch waits up to `within_s`
    for more (faust's `take` did the same per message)."""
    loop = asyncio.get_running_loop()
    carry: list[Any] = []
    while True:
        if not carry:
            carry = list(await queue.get())
        deadline = loop.time() + within_s
        while len(carry) < size:
            if queue.empty():
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    carry += await asyncio.wait_for(queue.get(), timeout=left)
                except TimeoutError:
                    break
            else:
                carry += queue.get_nowait()
        batch, carry = carry[:size], carry[size:]
        taken = [_Taken(m) for m in batch if admit(m)]
        if taken:
            yield taken


class _Transport(faust_kafka.Transport):
    Consumer = _Consumer


class _App(faust.App):
    """Tells the pipeline to stop waiting out a store outage as soon as shutdown begins."""

    def __init__(self, stopping: threading.Event, *args: Any, **kwargs: Any) -> None:
        self._fusionrec_stopping = stopping
        self.fusionrec_runner: BatchRunner | None = None  # set by build_app once the topics exist
        self.fusionrec_bulk: dict[str, Callable[[list[Any]], Any]] = {}  # topic -> sink (see _Consumer)
        super().__init__(*args, **kwargs)

    def on_init_dependencies(self) -> Any:
        """Without faust's Monitor sensor: per-event statistics for faust's web UI (off here), a
        tenth of the worker's event-loop time. Our own sensor (Prometheus) stays."""
        deps = super().on_init_dependencies()
        self.sensors.remove(self.monitor)
        return deps

    def _new_transport(self) -> Any:
        """The consumer's transport with `_Consumer` (the producer's is faust's own)."""
        return _Transport(self.conf.broker_consumer, self)

    async def on_stop(self) -> None:
        self._fusionrec_stopping.set()
        if self.fusionrec_runner is not None:
            self.fusionrec_runner.log_stop()
        await super().on_stop()


def _raw_topic(app: faust.App, name: str) -> Any:
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


def build_app(
    kafka: KafkaSettings,
    worker: WorkerSettings,
    pipeline: Pipeline,
    stopping: threading.Event,
    *,
    datadir: str,
    sensor: LagSensor | None = None,
) -> faust.App:
    """The faust app: one agent over the clickstream, one over the items topic (when named);
    `sensor` (optional) also receives consumer lag per partition."""
    Path(datadir).mkdir(parents=True, exist_ok=True)
    install_static_leave(worker.leave_on_stop)  # a static member stopping on purpose hands its partitions over
    app = _App(
        stopping,
        kafka.group,
        **kafka_client_config(kafka).faust_options(),  # broker URLs + credentials: also the dead-letter producer's
        store="memory://",
        autodiscover=False,
        web_enabled=False,
        datadir=datadir,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=worker.commit_interval_s,
        producer_acks=-1,
        # faust's own topics (the assignor's leader topic) as durable as ours: one replica would
        # make a single broker's loss stall rebalances on a cluster
        topic_replication_factor=kafka.replication_factor,
        stream_buffer_maxsize=max(4 * worker.batch_size, 4096),
        broker_session_timeout=SESSION_TIMEOUT_S,
        broker_heartbeat_interval=HEARTBEAT_INTERVAL_S,
        consumer_group_instance_id=worker.instance_id,
        TableManager=_TablelessManager,
        HttpClient=NoHttpClient,  # its default names aiohttp's client, imported when the app is made
    )
    source = _raw_topic(app, kafka.topic)
    dead = _raw_topic(app, kafka.dead_letter_topic)

    def highwater(tp: TopicPartition) -> int | None:
        # the runner hands back the message's own faust TP; the consumer exists only once the app runs
        return app.consumer.highwater(cast(TP, tp))

    runner = BatchRunner(
        pipeline,
        dead.send,
        highwater,
        sensor=sensor,
        batches_in_flight=worker.batches_in_flight,
        log_every_s=worker.log_every_s,
        drain_factor=DRAIN_FACTOR,
        stage_budget_s=worker.stage_budget_ms / 1000 if worker.ranking_stage else 0.0,
    )
    app.fusionrec_runner = runner

    @app.on_partitions_assigned.connect
    async def on_assigned(_sender: Any, /, *args: Any, **__: Any) -> None:
        # faust's Kafka driver sets the group generation of this assignment before it signals it
        generation = getattr(app, "consumer_generation_id", None)
        runner.on_assigned(
            args[0] if args else (), generation if isinstance(generation, int) and generation > 0 else None
        )

    @app.on_partitions_revoked.connect
    async def on_revoked(*_: Any, **__: Any) -> None:
        runner.on_revoked()

    # the clickstream skips faust's events and stream: the consumer hands each fetched batch to this
    # queue (`_Consumer`), cleared on a rebalance like faust's stream buffers
    fetched = app.FlowControlQueue(maxsize=BULK_QUEUE_BATCHES, clear_on_resume=True)
    app.fusionrec_bulk = {kafka.topic: fetched.put}

    def admit(message: Any) -> bool:
        return _admit(app, message)

    async def ack(taken: _Taken) -> None:
        app.consumer.ack(taken.message)

    @app.agent(source, concurrency=1)
    async def process(stream: Any) -> None:
        # the agent subscribes the topic; its stream stays empty (the consumer takes the messages)
        await runner.consume(bulk_batches(fetched, worker.batch_size, worker.batch_within_s, admit), ack)

    if kafka.items_topic:

        @app.agent(_raw_topic(app, kafka.items_topic), concurrency=1)
        async def live_items(stream: Any) -> None:
            await runner.consume_items(stream.noack_take(256, within=worker.batch_within_s), stream.ack)

    return app


def run_worker(
    kafka: KafkaSettings,
    worker: WorkerSettings,
    pipeline_factory: Callable[[threading.Event], Pipeline],
    *,
    datadir: str,
    sensor: LagSensor | None = None,
    loglevel: str = "INFO",
    warm: bool = True,
    join_when: Callable[[], bool] | None = None,
    before_join: Callable[[], None] | None = None,
    store_ready: Callable[[], None] | None = None,
) -> None:
    """Run until SIGTERM/SIGINT; faust handles the signals and commits acked offsets on the way out.
    `sensor` receives consumer lag per partition (serving it, on worker.metrics_host, is the caller's).
    `warm`: warm the ranker and the store's read path before joining the group (`warm_up`), so the
    first batches after a deploy or restart are not the slow ones. `join_when` (a spare, see
    fusionrec.spare): called once warm, blocks until the worker is to join the group; False: it
    never is, and this returns without joining. `before_join`: called last before the group is
    joined (the worker's priority restored, see fusionrec.priority). `store_ready`: waits until the
    store answers; called after the ranker's warm-up (which needs no store), so the two overlap."""
    # One BLAS thread: the ranking stage's matrix products run on the pipeline thread beside Kafka's,
    # the writer process and (on a small host) the brokers; OpenBLAS's spinning helper threads on
    # busy cores made its first batches after a start take 0.3-1 s instead of tens of ms
    threadpool_limits(1)
    stopping = threading.Event()
    pipeline = pipeline_factory(stopping)
    tune_gc()
    ready = cast(ReadySensor, sensor) if hasattr(sensor, "set_ready") else None
    warming: Background[float] | None = None
    if warm:  # mostly ONNX runs, outside the interpreter lock: the app is built meanwhile (0.05 s of Python)
        k = getattr(pipeline, "k", 20)
        warming = Background(lambda: warm_up(pipeline, worker.batch_size, k, ready, store_ready=store_ready), "warm_up")
    else:
        if store_ready is not None:
            store_ready()
        log.info("worker_ready warm_s=0.00 warm_up=off")
        if ready is not None:
            ready.set_ready(True)
    app = build_app(kafka, worker, pipeline, stopping, datadir=datadir, sensor=sensor)
    faust_worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    if warming is not None:
        warming.result()
    if join_when is not None:
        log.info("worker_standby group=%s instance_id=%s", kafka.group, worker.instance_id)
        if not join_when():
            log.info("worker_standby_released")
            return
        log.info("worker_standby_joining")
    if before_join is not None:
        before_join()
    log.info(
        "worker_start topic=%s group=%s bootstrap=%s batch_size=%d store=%s",
        kafka.topic,
        kafka.group,
        kafka.bootstrap,
        worker.batch_size,
        pipeline.store.url,
    )
    faust_worker.execute_from_commandline()
