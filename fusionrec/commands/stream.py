"""Stream commands: `demo` (embedded pipeline), `replay` (events into Kafka), `worker` (the Kafka
runtime) and `recommend` (read one stored list)."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from itertools import islice
from pathlib import Path
from typing import Annotated

import typer

from fusionrec import priority
from fusionrec.commands.context import DataOpt, settings, setup_logging
from fusionrec.spare import GO, Supervisor
from fusionrec.wiring import (
    build_pipeline,
    build_ranker,
    build_text_fusion,
    ensure_encoder,
    explainer,
    new_items_policy,
    open_results_store,
    rank_threads,
    wait_for_store,
)
from ranker.text_fusion import TextFusionModel
from schemas.codec import encode_recommendations
from shopdata import event_records, load_data
from streams.background import Background
from streams.embedded import records_from_values, run_embedded
from streams.metrics import PrometheusSensor
from streams.replay import ensure_topics, produce_records
from streams.stores import SQLiteStore
from streams.stores.base import ResultsStore
from streams.stores.offload import OffloadedWrites

__all__ = ["register"]

log = logging.getLogger("fusionrec.worker")


def demo(
    data: DataOpt = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="A trained bundle (`fusionrec train`) to rank with instead of the text-fused model."),
    ] = None,
    encoder: Annotated[
        Path | None,
        typer.Option(help="Text encoder export (default: models/encoder-int8, exported there on first run)."),
    ] = None,
    db: Annotated[Path | None, typer.Option(help="SQLite file for state, lists, dead letters (replaced).")] = None,
    show: Annotated[int | None, typer.Option(help="How many sample users to print.")] = None,
    k: Annotated[int | None, typer.Option(help="Items per list.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Events per micro-batch.")] = None,
) -> None:
    """Run the whole pipeline in-process (file replay -> SQLite), no servers, then show sample users.

    Without --bundle it ranks with the text-fused model: the items' text through the ONNX BERT
    encoder (exported on first run, no torch needed), behaviour embeddings from the histories, and
    each user's vector re-fused on every event, f = α·z + (1−α)·F with α chosen by validation.
    Each printed item says which of the user's items it is closest to ("because you viewed").
    Defaults come from the `[demo]` settings section.

    Examples:

      fusionrec demo

      fusionrec demo --data ../shared/data/scientific --show 5

      fusionrec demo --bundle out/bundle   (a trained model instead)
    """
    setup_logging()
    s = settings().with_overrides(
        data=data,
        demo={
            "db": str(db) if db else None,
            "show": show,
            "k": k,
            "batch_size": batch_size,
            "encoder": str(encoder) if encoder else None,
        },
    )
    cfg = s.demo
    started = time.perf_counter()
    dataset = load_data(s.data)
    typer.echo(
        f"dataset: {dataset.name}: {len(dataset.items)} items, {len(dataset.by_user())} users, "
        f"{len(dataset.events)} events"
    )
    if bundle is not None:
        ranker = build_ranker(bundle=bundle, policy=new_items_policy(s.worker))
        typer.echo(f"model: bundle {bundle} ({ranker.version})")
    else:
        enc = ensure_encoder(cfg.encoder)
        ranker = build_text_fusion(dataset, enc, progress=True)
        val = ranker.validation
        typer.echo(
            f"model: {ranker.version}: BERT text vectors ({enc}) fused with behaviour embeddings, "
            f"α={ranker.alpha} chosen on {val.get('cases', 0):.0f} held-out next items of {val.get('users', 0):.0f} "
            f"users (Recall@10 {_best_recall(val):.3f}; text only {val.get('recall@10[alpha=1.0]', 0):.3f}, "
            f"behaviour only {val.get('recall@10[alpha=0.0]', 0):.3f})"
        )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cfg.db}{suffix}").unlink(missing_ok=True)
    Path(cfg.db).parent.mkdir(parents=True, exist_ok=True)
    store = SQLiteStore(cfg.db)
    store.setup()
    pipeline = build_pipeline(store, ranker, k=cfg.k, state_cache_users=200_000)  # one process
    records = records_from_values((v for _, v in event_records(dataset)), source=f"file:{dataset.name}")
    report = run_embedded(records, pipeline, dead_letters=store, batch_size=cfg.batch_size, total=len(dataset.events))
    typer.echo(
        f"replayed {report.records} events in {report.elapsed_s:.2f}s "
        f"({report.events_per_s:,.0f} events/s): {report.applied} applied, "
        f"{report.duplicates} duplicates, {report.dead_letters} dead letters; "
        f"{store.count_states()} users stored in {cfg.db}"
    )
    model_dir = None
    if isinstance(ranker, TextFusionModel):  # the API serves it beside the lists it made
        model_dir = ranker.save(Path(cfg.db).with_suffix(".model"))
    titles = {it.item_id: it.title for it in dataset.items}
    explain = explainer(ranker)
    by_user = dataset.by_user()
    for user_id in sorted(by_user, key=lambda u: (-len(by_user[u]), u))[: cfg.show]:
        _show_user(store, user_id, titles, explain)
    store.close()
    typer.echo(f"\ndemo done in {time.perf_counter() - started:.1f}s")
    typer.echo(f"read any user's list:   fusionrec recommend USER_ID --store sqlite:///{cfg.db}")
    enc_flag = f" --encoder {cfg.encoder} --text-model {model_dir}" if model_dir else f" --bundle {bundle}"
    data_flag = f" --data {s.data}" if s.data and bundle is None else ""
    typer.echo(
        f"open the console:        fusionrec serve --store sqlite:///{cfg.db}{enc_flag}{data_flag}"
        "   then http://127.0.0.1:8000/"
    )


def _best_recall(validation: dict[str, float]) -> float:
    return max((v for key, v in validation.items() if key.startswith("recall@10")), default=0.0)


def _show_user(
    store: SQLiteStore,
    user_id: str,
    titles: dict[str, str],
    explain: Callable[[Sequence[str], Sequence[str]], list[tuple[str | None, float]]] | None,
) -> None:
    """A user's last events (from their stored state), their list, and per item its "because"."""
    state = store.get_states([user_id]).get(user_id)
    if state is None:
        return
    typer.echo(f"\nuser {user_id}: {state.n_events} events; last ones:")
    for item_id, kind in list(zip(state.recent_items, state.recent_types, strict=True))[-5:]:
        typer.echo(f"  - {kind:<11} {titles.get(item_id, item_id)[:70]}")
    for query in state.recent_queries[-2:]:
        typer.echo(f"  - search      '{query}'")
    rec = store.get_recommendations(user_id)
    if rec is None:
        typer.echo("  (no list stored)")
        return
    typer.echo(f"  recommended ({rec.source}, model {rec.model_version}):")
    shown = rec.items[:5]
    reasons = explain([s.item_id for s in shown], state.recent_items) if explain else [(None, 0.0)] * len(shown)
    for rank, (scored, (near, sim)) in enumerate(zip(shown, reasons, strict=True), start=1):
        typer.echo(f"  {rank:>2}. {titles.get(scored.item_id, scored.item_id)[:70]}  ({scored.score:.3f})")
        if near is not None:
            typer.echo(f"      because you viewed: {titles.get(near, near)[:60]}  (similarity {sim:.2f})")


def replay(
    data: DataOpt = None,
    topic: Annotated[str | None, typer.Option(help="Target topic (default: settings kafka.topic).")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second; omit for as fast as possible.")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Produce only the first N events.")] = None,
) -> None:
    """Produce a dataset's events into Kafka, keyed by user, with a progress bar.

    Example: fusionrec replay --rate 500 --data ../shared/data/scientific
    """
    setup_logging()
    s = settings().with_overrides(data=data, kafka={"topic": topic}, replay={"rate": rate})
    dataset = load_data(s.data)
    ensure_topics(s.kafka, {s.kafka.topic: s.kafka.partitions, s.kafka.dead_letter_topic: 1})
    n = min(limit, len(dataset.events)) if limit else len(dataset.events)
    report = produce_records(s.kafka, s.kafka.topic, islice(event_records(dataset), n), rate=s.replay.rate, total=n)
    typer.echo(
        f"produced {report.produced} events to {s.kafka.topic} in {report.elapsed_s:.2f}s "
        f"({report.events_per_s:,.0f} events/s)"
    )


def worker(
    data: DataOpt = None,
    store: Annotated[str | None, typer.Option(help="Store URL (default: Cassandra from settings).")] = None,
    topic: Annotated[str | None, typer.Option(help="Source topic (default: settings kafka.topic).")] = None,
    dead_letter_topic: Annotated[str | None, typer.Option(help="Dead-letter topic.")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Events per micro-batch.")] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Model bundle from `fusionrec train`: all the worker needs (no dataset is read)."),
    ] = None,
    metrics_port: Annotated[
        int | None, typer.Option(help="Serve Prometheus metrics on this port (host: settings worker.metrics_host).")
    ] = None,
    items_topic: Annotated[str | None, typer.Option(help="Topic of new/changed item records (JSON).")] = None,
    warm_up: Annotated[
        bool, typer.Option(help="Warm the model's sessions and the store's reads before joining the group.")
    ] = True,
    instance_id: Annotated[
        str | None,
        typer.Option(
            help="Static group membership: a worker restarted under the same id gets its partitions back "
            "at once; one stopped on purpose (SIGTERM) still leaves the group, so the others take its "
            "partitions at once (settings worker.instance_id, unique per worker process; worker.leave_on_stop)."
        ),
    ] = None,
    spare: Annotated[
        bool,
        typer.Option(
            "--spare",
            help="Keep a warmed-up second worker process waiting outside the group: if the worker process "
            "dies it takes over in well under a second (with --instance-id, its partitions at once).",
        ),
    ] = False,
    standby: Annotated[bool, typer.Option("--standby", hidden=True)] = False,
) -> None:
    """Consume the clickstream (faust-streaming), fold events into user state, write lists to the store.

    With --bundle the worker ranks with the trained model and needs nothing else; without one it fits
    the co-occurrence baseline on --data (default: the synthetic shop). Bad events go to the
    dead-letter topic with the reason in headers; offsets are committed only after the writes, so a
    crash replays and never double-counts. Stop with Ctrl-C or SIGTERM.
    """
    setup_logging()
    if spare:
        raise typer.Exit(_supervise(instance_id or settings().worker.instance_id))
    s = settings().with_overrides(
        kafka={"topic": topic, "dead_letter_topic": dead_letter_topic, "group": group, "items_topic": items_topic},
        worker={"batch_size": batch_size, "metrics_port": metrics_port, "store_url": store, "instance_id": instance_id},
        data=data,
    )
    kafka = s.kafka
    # the start below is seconds of CPU: at a lower priority it does not slow a worker already serving
    # on this host (a spare's supervisor started this process lowered already); back at the join
    lowered = priority.lower() if warm_up or standby else False
    if bundle and data:
        log.warning("data_ignored data=%s reason=the bundle carries its own catalog and popularity", data)
    results: ResultsStore = open_results_store(s)
    reads: ResultsStore = results  # what the warm-up waits for: the store this process reads
    if s.worker.writer_process and not results.url.startswith("memory:"):
        results = OffloadedWrites(reads, replication=s.cassandra.replication())
        # the writer process starts while the model loads: a restart is back sooner. Forked: no client
        # or model session exists yet in this process, and the child needs none of its imports again
        results.begin(fork=True)
    # the topics' check is a round trip to the brokers (0.15 s here) that nothing before the join needs
    topics_made = Background(
        lambda: ensure_topics(kafka, {kafka.topic: kafka.partitions, kafka.dead_letter_topic: 1, kafka.items_topic: 1}),
        "ensure_topics",
    )
    # the model loads (file digests, ONNX sessions, the compiled ranking trees: mostly outside the
    # interpreter lock) while faust is imported (0.25 s of Python that only this command needs, lazy
    # for that): the two took 0.37 s one after the other here and 0.29 s side by side
    loading = Background(
        lambda: (
            build_ranker(
                bundle=bundle,
                ranking_stage=s.worker.ranking_stage,
                policy=new_items_policy(s.worker),
                threads=rank_threads(s.worker),
            )
            if bundle
            else build_ranker(load_data(s.data))
        ),
        "load_model",
    )
    from streams.faust_worker import run_worker

    ranker = loading.result()
    sensor = PrometheusSensor()

    def serve_metrics() -> None:
        if s.worker.metrics_port:
            sensor.serve(s.worker.metrics_port, s.worker.metrics_host)

    def join_when() -> bool:
        """A spare: wait for the supervisor's word (fusionrec.spare.GO); its port is the active one's until then."""
        told = sys.stdin.buffer.read(1) == GO
        if told:
            serve_metrics()
        return told

    if not standby:
        serve_metrics()
    topics_made.result()
    run_worker(
        kafka,
        s.worker,
        lambda stopping: build_pipeline(results, ranker, s.worker.k, stopping, sensor, s.worker.state_cache_users),
        sensor=sensor,
        datadir=str(Path(".local") / "faust" / kafka.group),
        warm=warm_up,
        join_when=join_when if standby else None,
        before_join=_restore_priority if lowered else None,
        # beside the ranker's warm-up: this process's own connection. The writer process is waited for
        # at the first write, so its start overlaps the warm-up, the group join and the first batch's ranking
        store_ready=lambda: wait_for_store(reads),
    )


def _restore_priority() -> None:
    log.info("worker_priority nice=0 raised_threads=%d", priority.restore())


def _supervise(instance_id: str | None) -> int:
    """`worker --spare`: this process supervises; the workers are children (fusionrec.spare)."""
    if not instance_id:
        log.warning(
            "spare_without_instance_id: a spare replaces a dead worker at once, but without static membership "
            "(--instance-id) the group holds its partitions until its session expires"
        )
    args = [a for a in sys.argv[1:] if a != "--spare"]
    return Supervisor([sys.executable, "-m", "fusionrec", *args]).run()


def recommend(
    user_id: str,
    store: Annotated[
        str | None,
        typer.Option(help="Store URL, e.g. sqlite:///out/demo.db (default: Cassandra from settings)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a user's stored list (one key lookup). Never creates a store: a wrong URL is an error."""
    results = open_results_store(settings(), store, create=False)
    results.setup()
    try:
        rec = results.get_recommendations(user_id)
    finally:
        results.close()
    if rec is None:
        typer.echo(f"no list stored for user {user_id!r}", err=True)
        raise typer.Exit(1)
    if as_json:
        typer.echo(encode_recommendations(rec).decode())
        return
    age_s = (time.time() * 1000 - rec.generated_at) / 1000
    typer.echo(
        f"user {rec.user_id}: {len(rec.items)} items, source={rec.source}, model={rec.model_version}, "
        f"config={rec.config_digest}, age={age_s:.1f}s"
    )
    for rank, scored in enumerate(rec.items, start=1):
        typer.echo(f"{rank:>3}. {scored.item_id}  {scored.score:.4f}")


def register(app: typer.Typer) -> None:
    app.command()(demo)
    app.command()(replay)
    app.command()(worker)
    app.command()(recommend)
