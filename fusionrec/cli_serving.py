"""CLI commands of the serving side: `serve`, `search-eval`, `tag-items` (registered on the main app)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["register"]


def _popularity(data: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for seq in data.item_sequences():
        for item in seq:
            counts[item] = counts.get(item, 0) + 1
    return counts


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


def register(app: typer.Typer) -> None:
    @app.command("search-eval")
    def search_eval(
        data: Annotated[Path, typer.Option("--data", help="Dataset folder (items.csv + events.csv).")],
        bundle: Annotated[Path, typer.Option("--bundle", help="Bundle from `fusionrec train` (user vectors).")],
        json_out: Annotated[Path, typer.Option("--json", help="Where to write the results JSON.")],
        report: Annotated[Path | None, typer.Option(help="Folder for search.md and search.png.")] = None,
        cache: Annotated[Path, typer.Option(help="Item text-vector cache (incremental).")] = Path("out/serving-cache"),
        tune_users: Annotated[int, typer.Option(help="Validation users the weights are tuned on.")] = 3000,
        encoder: Annotated[
            Path | None, typer.Option(help="Text encoder export; default: the bundle's own copy (bundle/encoder).")
        ] = None,
    ) -> None:
        """Search quality: BM25, dense, hybrid and hybrid + personalisation on category-path and
        known-item queries for each user's last event (weights tuned on the event before it).

        Example: fusionrec search-eval --data ../shared/data/scientific --bundle out/bundle-sci --json out/search.json
        """
        from fusionrec.datasets import load_dataset
        from serving.quality import evaluate_search
        from serving.resources import load_resources

        ds = load_dataset(data)
        res = load_resources(ds.items, bundle=bundle, encoder=encoder, cache=cache, popularity=_popularity(ds))
        sequences = {u: [e.item_id for e in evs if e.item_id] for u, evs in ds.by_user().items()}
        out = evaluate_search(
            res.index,
            sequences,
            res.items,
            lambda qs: res.encoder.encode(qs, batch_size=128),
            lambda hist: res.affinity(res.user_vectors(hist)),
            tune_users=tune_users,
        )
        out["model_version"] = res.model_version
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(out, indent=2))
        table = search_table_markdown(out)
        if report:
            report.mkdir(parents=True, exist_ok=True)
            w = out["weights"]
            (report / "search.md").write_text(
                f"# Search quality ({data.name}, {out['test']['users']} users, test split)\n\n"
                f"weights tuned on validation: dense {w['dense']}, personal {w['personal']}\n\n{table}\n\n"
                "![search](search.png)\n"
            )
            _plot(out, report / "search.png")
        typer.echo(table)
        typer.echo(f"weights (validation): {out['weights']}; wrote {json_out}")
