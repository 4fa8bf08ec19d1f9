"""Stream commands: `demo` (embedded pipeline), `replay` (events into Kafka), `worker` (the Kafka
runtime) and `recommend` (read one stored list)."""

from __future__ import annotations

import logging
import time
from itertools import islice
from pathlib import Path
from typing import Annotated

import typer

from fusionrec.commands.context import DataOpt, settings, setup_logging
from fusionrec.wiring import build_pipeline, build_ranker, open_results_store, wait_for_store
from schemas.codec import encode_recommendations
from shopdata import event_records, load_data
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
    db: Annotated[Path | None, typer.Option(help="SQLite file for state, lists, dead letters (replaced).")] = None,
    show: Annotated[int | None, typer.Option(help="How many sample users to print.")] = None,
    k: Annotated[int | None, typer.Option(help="Items per list.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Events per micro-batch.")] = None,
) -> None:
    """Run the whole pipeline in-process (file replay -> SQLite), no servers, then show sample users.

    Defaults come from the `[demo]` settings section. Example: fusionrec demo --data ../shared/data/scientific
    """
    setup_logging()
    s = settings().with_overrides(
        data=data, demo={"db": str(db) if db else None, "show": show, "k": k, "batch_size": batch_size}
    )
    cfg = s.demo
    dataset = load_data(s.data)
    typer.echo(
        f"dataset: {dataset.name}: {len(dataset.items)} items, {len(dataset.by_user())} users, "
        f"{len(dataset.events)} events"
    )
    for suffix in ("", "-wal", "-shm"):
        Path(f"{cfg.db}{suffix}").unlink(missing_ok=True)
    store = SQLiteStore(cfg.db)
    store.setup()
    pipeline = build_pipeline(store, build_ranker(dataset), k=cfg.k, state_cache_users=200_000)  # one process
    records = records_from_values((v for _, v in event_records(dataset)), source=f"file:{dataset.name}")
    report = run_embedded(records, pipeline, dead_letters=store, batch_size=cfg.batch_size, total=len(dataset.events))
    typer.echo(
        f"replayed {report.records} events in {report.elapsed_s:.2f}s "
        f"({report.events_per_s:,.0f} events/s): {report.applied} applied, "
        f"{report.duplicates} duplicates, {report.dead_letters} dead letters; "
        f"{store.count_states()} users stored in {cfg.db}"
    )
    titles = {it.item_id: it.title for it in dataset.items}
    by_user = dataset.by_user()
    for user_id in sorted(by_user, key=lambda u: (-len(by_user[u]), u))[: cfg.show]:
        events = by_user[user_id]
        typer.echo(f"\nuser {user_id}: {len(events)} events; last ones:")
        for ev in events[-5:]:
            what = (
                f"search '{ev.query}'"
                if ev.item_id is None
                else f"{ev.type.value:<11} {titles.get(ev.item_id, ev.item_id)[:70]}"
            )
            typer.echo(f"  - {what}")
        rec = store.get_recommendations(user_id)
        if rec is None:
            typer.echo("  (no list stored)")
            continue
        typer.echo(f"  recommended ({rec.source}, model {rec.model_version}):")
        for rank, scored in enumerate(rec.items[:5], start=1):
            typer.echo(f"  {rank:>2}. {titles.get(scored.item_id, scored.item_id)[:70]}  ({scored.score:.3f})")
    store.close()
    typer.echo(f"\nread any user's list: fusionrec recommend USER_ID --store sqlite:///{cfg.db}")


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
    ensure_topics(s.kafka.bootstrap, {s.kafka.topic: s.kafka.partitions, s.kafka.dead_letter_topic: 1})
    n = min(limit, len(dataset.events)) if limit else len(dataset.events)
    report = produce_records(
        s.kafka.bootstrap, s.kafka.topic, islice(event_records(dataset), n), rate=s.replay.rate, total=n
    )
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
) -> None:
    """Consume the clickstream (faust-streaming), fold events into user state, write lists to the store.

    With --bundle the worker ranks with the trained model and needs nothing else; without one it fits
    the co-occurrence baseline on --data (default: the synthetic shop). Bad events go to the
    dead-letter topic with the reason in headers; offsets are committed only after the writes, so a
    crash replays and never double-counts. Stop with Ctrl-C or SIGTERM.
    """
    setup_logging()
    # lazy: faust costs ~0.7 s at import and only this command needs it
    from streams.faust_worker import run_worker

    s = settings().with_overrides(
        kafka={"topic": topic, "dead_letter_topic": dead_letter_topic, "group": group, "items_topic": items_topic},
        worker={"batch_size": batch_size, "metrics_port": metrics_port, "store_url": store},
        data=data,
    )
    kafka = s.kafka
    ensure_topics(kafka.bootstrap, {kafka.topic: kafka.partitions, kafka.dead_letter_topic: 1, kafka.items_topic: 1})
    if bundle and data:
        log.warning("data_ignored data=%s reason=the bundle carries its own catalog and popularity", data)
    ranker = build_ranker(bundle=bundle) if bundle else build_ranker(load_data(s.data))
    results: ResultsStore = open_results_store(s)
    if s.worker.writer_process and not results.url.startswith("memory:"):
        results = OffloadedWrites(results, replication=s.cassandra.replication())
    wait_for_store(results)
    sensor = PrometheusSensor()
    if s.worker.metrics_port:
        sensor.serve(s.worker.metrics_port, s.worker.metrics_host)
    run_worker(
        kafka,
        s.worker,
        lambda stopping: build_pipeline(results, ranker, s.worker.k, stopping, sensor, s.worker.state_cache_users),
        sensor=sensor,
        datadir=str(Path(".local") / "faust" / kafka.group),
    )


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
