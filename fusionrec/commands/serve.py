"""Serving commands: `serve` (the read API), `search-eval` (search quality) and `tag-items`."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from encoders.text import TextEncoder
from fusionrec.commands.context import settings, setup_logging
from fusionrec.wiring import new_items_policy, open_results_store
from serving.quality import evaluate_search
from serving.resources import load_resources
from serving.reviews import load_reviews
from serving.tags import tag_items
from shopdata import load_dataset, load_items, load_items_file

__all__ = ["register"]

Taste = Literal["list", "history"]


def search_table_markdown(result: dict[str, Any], split: str = "test") -> str:
    table = result[split]["table"]
    lines = [
        "| query kind | mode | MRR@10 | Recall@10 | queries |",
        "|---|---|---|---|---|",
    ]
    for kind, modes in table.items():
        for mode, m in modes.items():
            lines.append(f"| {kind} | {mode} | {m['mrr@10']:.4f} | {m['recall@10']:.4f} | {int(m['queries'])} |")
    return "\n".join(lines)


def _plot(result: dict[str, Any], path: Path) -> None:
    # lazy: matplotlib is in the `train` extra (reports), not in the runtime install
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table = result["test"]["table"]
    kinds = list(table)
    modes = list(next(iter(table.values())))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("mrr@10", "recall@10"), strict=True):
        width = 0.8 / len(modes)
        for j, mode in enumerate(modes):
            ax.bar(
                [i + j * width for i in range(len(kinds))], [table[k][mode][metric] for k in kinds], width, label=mode
            )
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(kinds))], kinds)
        ax.set_title(f"search {metric} (test split)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def serve(
    bundle: Annotated[
        Path | None,
        typer.Option(help="Model bundle: its catalog, popularity, user vectors, similar items, personal search."),
    ] = None,
    data: Annotated[
        str | None, typer.Option(help="Without a bundle: dataset folder (items + popularity); default synthetic.")
    ] = None,
    items: Annotated[Path | None, typer.Option(help="Without a bundle: items file (CSV or JSONL).")] = None,
    text_model: Annotated[
        Path | None,
        typer.Option(help="Without a bundle: the text-fused model `fusionrec demo` saved (out/demo.model)."),
    ] = None,
    encoder: Annotated[
        Path | None, typer.Option(help="Text encoder export (default: bundle/encoder, else models/encoder-int8).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(help="Store URL: cassandra://host:9042/keyspace (default from settings) or sqlite:///path.db."),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Interface to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    cache: Annotated[Path | None, typer.Option(help="Item text-vector cache (incremental).")] = None,
    dense_weight: Annotated[float | None, typer.Option(help="Dense share of the hybrid (validation-tuned).")] = None,
    personal_weight: Annotated[float | None, typer.Option(help="Weight of the user's affinity in search.")] = None,
    threads: Annotated[
        int | None, typer.Option(help="ONNX Runtime intra-op threads per request (requests run side by side).")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (one per core is typical).")] = None,
    request_threads: Annotated[int | None, typer.Option(help="Request threads per worker process.")] = None,
) -> None:
    """Start the HTTP API: GET /v1/users/{id}/recommendations, /v1/items/{id}/similar, /v1/search,
    /healthz, /readyz, /metrics; OpenAPI docs at /docs. Every option is also a key of the `[serve]`
    settings section; with --bundle no dataset is read.

    Examples:

      fusionrec serve --store sqlite:///out/demo.db   (after `fusionrec demo`; or `make serve`)

      fusionrec serve --bundle out/bundle --workers 2   (Cassandra from settings)
    """
    setup_logging()
    # lazy: uvicorn + FastAPI cost ~1.5 s at import and only this command needs them
    import uvicorn

    from fusionrec.serve_app import build_app, export_to_children

    flags = {
        "bundle": bundle,
        "items": items,
        "text_model": text_model,
        "encoder": encoder,
        "store_url": store,
        "cache": cache,
        "host": host,
        "port": port,
        "dense_weight": dense_weight,
        "personal_weight": personal_weight,
        "threads": threads,
        "workers": workers,
        "request_threads": request_threads,
    }
    s = settings().with_overrides(data=data, serve={k: str(v) if isinstance(v, Path) else v for k, v in flags.items()})
    cfg = s.serve
    if cfg.bundle and (data or items):
        typer.echo("note: --data/--items ignored: the bundle carries its own catalog and popularity", err=True)
    app_, res, results = build_app(s)  # fails here, once, on bad settings; fills the vector cache
    where = f"on http://{cfg.host}:{cfg.port} (docs: /docs), {cfg.workers} worker process(es)"
    typer.echo(f"serving {len(res.items)} items, model {res.model_version}, store {results.url} {where}")
    if cfg.workers == 1:
        try:
            uvicorn.run(app_, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
        finally:
            results.close()
        return
    results.close()
    export_to_children(s)
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="fusionrec-metrics-"))
    uvicorn.run(
        "fusionrec.serve_app:app_from_env",
        factory=True,
        workers=cfg.workers,
        host=cfg.host,
        port=cfg.port,
        log_level="warning",
        access_log=False,
    )


def search_eval(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (items.csv + events.csv).")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle from `fusionrec train` (user vectors).")],
    json_out: Annotated[Path, typer.Option("--json", help="Where to write the results JSON.")],
    report: Annotated[Path | None, typer.Option(help="Folder for search.md and search.png.")] = None,
    cache: Annotated[Path, typer.Option(help="Item text-vector cache (incremental).")] = Path("out/serving-cache"),
    tune_users: Annotated[int, typer.Option(min=1, help="Validation users the weights are tuned on.")] = 3000,
    encoder: Annotated[
        Path | None, typer.Option(help="Text encoder export; default: the bundle's own copy (bundle/encoder).")
    ] = None,
    taste: Annotated[
        Taste,
        typer.Option(
            help="Personal mode's user taste: list (as the API serves it: the user vector recovered from "
            "the user's stored list and its scores) or history (the bundle's user vector of the history)."
        ),
    ] = "list",
) -> None:
    """Search quality: BM25, dense, hybrid and hybrid + personalisation on category-path and
    known-item queries for each user's last event (weights tuned on the event before it).

    Example: fusionrec search-eval --data ../shared/data/scientific --bundle out/bundle-sci --json out/search.json
    """
    setup_logging()
    ds = load_dataset(data)
    res = load_resources(ds.items, bundle=bundle, encoder=encoder, cache=cache, popularity=ds.item_counts())
    sequences = {u: [e.item_id for e in evs if e.item_id] for u, evs in ds.by_user().items()}
    policy = new_items_policy(settings().worker)  # the lists as this shop's worker writes them
    out = evaluate_search(
        res.index,
        sequences,
        res.items,
        lambda qs: res.encoder.encode(qs, batch_size=128),
        (lambda hist: res.list_affinity_from_histories(hist, policy=policy))
        if taste == "list"
        else (lambda hist: res.affinity(res.user_vectors(hist))),
        tune_users=tune_users,
    )
    out["model_version"] = res.model_version
    out["taste"] = taste
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(out, indent=2))
    table = search_table_markdown(out)
    if report:
        report.mkdir(parents=True, exist_ok=True)
        w = out["weights"]
        (report / "search.md").write_text(
            f"# Search quality ({data.name}, {out['test']['users']} users, test split)\n\n"
            f"weights tuned on validation: dense {w['dense']}, personal {w['personal']} (taste: {taste})\n\n{table}\n\n"
            "![search](search.png)\n"
        )
        _plot(out, report / "search.png")
    typer.echo(table)
    typer.echo(f"weights (validation): {out['weights']}; wrote {json_out}")


def tag_items_cmd(
    out: Annotated[Path, typer.Option("--out", help="JSONL file: one {item_id, tags: [[tag, score]..]} per item.")],
    items: Annotated[Path | None, typer.Option(help="Items file (CSV or JSONL).")] = None,
    data: Annotated[Path | None, typer.Option(help="Dataset folder (its items.csv) instead of --items.")] = None,
    reviews: Annotated[Path | None, typer.Option(help="Reviews: CSV item_id,text or JSONL.")] = None,
    encoder: Annotated[Path, typer.Option(help="Text encoder export.")] = Path("models/encoder-int8"),
    store: Annotated[
        str | None, typer.Option(help="Also store the tags here (cassandra://.. or sqlite:///..).")
    ] = None,
    k: Annotated[int, typer.Option(min=1, max=20, help="Tags per item.")] = 5,
) -> None:
    """Tag every item with key phrases from its text (and reviews), scored against the item's
    vector by the same encoder and diversified (MMR). The API returns them with each item.

    Example: fusionrec tag-items --data ../shared/data/scientific --out out/tags.jsonl --store sqlite:///out/fusionrec.db
    """
    setup_logging()
    if items is not None and data is None:
        catalog = load_items_file(items)
    elif data is not None and items is None:
        catalog = load_items(data / "items.csv")
    else:
        raise typer.BadParameter("give exactly one of --items or --data")
    enc = TextEncoder(encoder)
    texts = load_reviews(reviews) if reviews else None
    tags = tag_items(catalog, lambda t: enc.encode(t, batch_size=256, progress=True, desc="tag-items"), texts, k=k)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as fh:
        for item_id, pairs in tags.items():
            fh.write(json.dumps({"item_id": item_id, "tags": pairs}) + "\n")
    if store:
        s = open_results_store(settings(), store)
        s.setup()
        try:
            s.put_item_tags(tags, model=f"{enc.manifest.source_model}:{enc.manifest.variant}")
        finally:
            s.close()
    typer.echo(f"tagged {len(tags)} items -> {out}" + (f" and {store}" if store else ""))


def register(app: typer.Typer) -> None:
    app.command()(serve)
    app.command("search-eval")(search_eval)
    app.command("tag-items")(tag_items_cmd)
