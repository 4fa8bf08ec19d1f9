"""Evaluation report: a Markdown table and PNG plots (metric vs K, NDCG@10 by history length)."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["write_report"]

COLUMNS = [
    "recall@10",
    "ndcg@10",
    "recall@20",
    "ndcg@20",
    "recall@50",
    "ndcg@50",
    "mrr",
    "precision@10",
    "f1@10",
    "auc",
    "coverage@10",
    "cross_category_hits@10",
]


def _table(results: dict[str, dict[str, float]]) -> str:
    rows = sorted(results.items(), key=lambda kv: -kv[1]["ndcg@10"])
    head = "| model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    return head + "".join(
        f"| {name} | " + " | ".join(f"{m.get(c, float('nan')):.4f}" for c in COLUMNS) + " |\n" for name, m in rows
    )


def markdown_table(out: dict[str, Any]) -> str:
    """One table per protocol, each headed by the protocol's name and what it removes."""
    text = (
        f"# fusionrec evaluation\n\nsplit: {out['protocol']}; users: {out['n_users']}; items: {out['n_items']}; "
        f"bundle: {out['bundle']} ({out['chosen_variant']}).\n"
    )
    protocols: dict[str, Any] = out.get("protocols") or {"production": {"results": out["results"]}}
    for name, p in protocols.items():
        text += f"\n## protocol: {name}\n\n{p.get('description', '')}; users: {p.get('n_users', out['n_users'])}"
        if "n_cold_items" in p:
            text += f"; cold items: {p['n_cold_items']}"
        text += ".\n\n" + _table(p["results"])
    if "cold-items" not in protocols:
        text += (
            "\n## protocol: cold-items\n\nabsent: this bundle was trained without held-out items "
            "(train it with `fusionrec train --cold-items 0.1` to measure it).\n"
        )
    return text


def write_report(out: dict[str, Any], folder: Path) -> list[Path]:
    try:  # lazy: matplotlib is in the `train` extra, only reports need it
        import matplotlib
    except ImportError as exc:
        raise ImportError("plots need matplotlib: pip install 'fusionrec[train]'") from exc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "report.md"]
    written[0].write_text(markdown_table(out))
    ranks: dict[str, np.ndarray] = out["_ranks"]
    ks = np.arange(1, 51)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, r in sorted(ranks.items()):
        if name.startswith("fusion:") and name != f"fusion:{out['chosen_variant']}":
            style = {"linestyle": ":", "alpha": 0.6}
        else:
            style = {"linewidth": 2.2 if name == "fusionrec" else 1.2}
        axes[0].plot(ks, [(r < k).mean() for k in ks], label=name, **style)
        axes[1].plot(ks, [np.where(r < k, 1 / np.log2(r + 2), 0).mean() for k in ks], label=name, **style)
    for ax, title in zip(axes, ("Recall@K", "NDCG@K"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("K")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(folder / "metrics_vs_k.png", dpi=110)
    plt.close(fig)
    written.append(folder / "metrics_vs_k.png")
    lengths: np.ndarray = out["_history_lengths"]
    edges = [1, 3, 5, 8, 13, 21, 10_000]
    labels = [f"{lo}-{hi - 1}" if hi < 10_000 else f"{lo}+" for lo, hi in pairwise(edges)]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    names = ["fusionrec", "text-only", "item-knn", "popularity"]
    width = 0.8 / len(names)
    for j, name in enumerate(n for n in names if n in ranks):
        r = ranks[name]
        vals = []
        for lo, hi in pairwise(edges):
            sel = (lengths >= lo) & (lengths < hi)
            vals.append(np.where(r[sel] < 10, 1 / np.log2(r[sel] + 2), 0).mean() if sel.any() else 0.0)
        ax.bar(np.arange(len(labels)) + j * width, vals, width, label=name)
    counts = [int(((lengths >= lo) & (lengths < hi)).sum()) for lo, hi in pairwise(edges)]
    ax.set_xticks(
        np.arange(len(labels)) + 0.4 - width / 2,
        [f"{lab}\n(n={c})" for lab, c in zip(labels, counts, strict=True)],
    )
    ax.set_title("NDCG@10 by history length")
    ax.set_xlabel("events in history")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / "ndcg10_by_history_length.png", dpi=110)
    plt.close(fig)
    written.append(folder / "ndcg10_by_history_length.png")
    return written
