"""Catalogs as shops have them (issue 13): without a brand column, without a category column, with
multi-valued categories, train for an epoch, export and load as a bundle; a bundle trained with
cold items records them and `evaluate` scores the three protocols on it."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ranker.bundle import ModelBundle
from ranker.data import build_catalog, cold_item_ids, user_sequences
from shopdata.loader import load_dataset
from tests.conftest import SMALL, VARIANTS


def _shop_with(shop_dir: Path, root: Path, columns: list[str], category: str | None = None) -> Path:
    """A copy of the small shop whose items.csv has only `columns` (category optionally replaced)."""
    root.mkdir(parents=True)
    with (shop_dir / "items.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    with (root / "items.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(columns)
        for r in rows:
            r = {**r, "description": f"about {r['title']}"}
            if category is not None:
                r["category"] = category
            w.writerow([r[c] for c in columns])
    (root / "events.csv").write_text((shop_dir / "events.csv").read_text())
    return root


def _fit(data: Path, encoder: Path, out: Path, cold: float = 0.0) -> ModelBundle:
    from ranker.fit import fit
    from ranker.train import TrainConfig

    fit(load_dataset(data), out, encoder, variants=VARIANTS, model_overrides=SMALL,
        train_cfg=TrainConfig(epochs=1, patience=1, seed=7, batch_size=128), progress=False,
        cold_items=cold)  # fmt: skip
    return ModelBundle.load(out)


@pytest.mark.parametrize(
    "columns",
    [["item_id", "title", "description", "category"], ["item_id", "title", "brand"]],
    ids=["no-brand", "no-category"],
)
def test_catalog_without_brand_or_category_trains_and_exports(
    columns: list[str], shop_dir: Path, tiny_encoder: Path, tmp_path: Path
) -> None:
    data = _shop_with(shop_dir, tmp_path / "shop", columns)
    catalog = build_catalog(load_dataset(data))
    assert (catalog.brands == 0).all() if "brand" not in columns else (catalog.categories == 0).all()
    bundle = _fit(data, tiny_encoder, tmp_path / "bundle")
    assert len(bundle.item_ids) == catalog.n_items
    scores = bundle.scores([[0, 1, 2]], [[1, 1, 1]])
    assert scores.shape == (1, catalog.n_items) and np.isfinite(scores).all()


def test_multi_valued_categories_take_the_first_label(shop_dir: Path, tmp_path: Path) -> None:
    data = _shop_with(shop_dir, tmp_path / "shop", ["item_id", "title", "category"], "Adventure, Comedy")
    catalog = build_catalog(load_dataset(data))
    assert catalog.category_names == ["", "Adventure"]
    assert (catalog.categories[1:] == 1).all()


def test_cold_items_bundle_and_the_three_protocols(shop_dir: Path, tiny_encoder: Path, tmp_path: Path) -> None:
    from ranker.evaluate import evaluate

    bundle = _fit(shop_dir, tiny_encoder, tmp_path / "bundle", cold=0.2)
    dataset = load_dataset(shop_dir)
    cold = cold_item_ids([it.item_id for it in dataset.items], 0.2)
    assert bundle.manifest["cold_items"] == {"share": 0.2, "draw": "", "items": cold} and cold
    out = evaluate(dataset, tmp_path / "bundle")
    protocols = out["protocols"]
    assert set(protocols) == {"published", "production", "cold-items"}
    assert out["results"] is protocols["production"]["results"]
    catalog = build_catalog(dataset)
    seqs = user_sequences(dataset, catalog)
    cold_rows = {catalog.index()[c] for c in cold}
    expected = sum(1 for items, _ in seqs.values() if len(items) >= 3 and items[-1] in cold_rows)
    assert protocols["cold-items"]["n_users"] == expected > 0
    for p in protocols.values():
        assert {"fusionrec", "item-knn", "text-only", "popularity", "fusion:gated"} <= set(p["results"])
    assert protocols["published"]["n_users"] == protocols["production"]["n_users"] == out["n_users"]
    # item-kNN never saw a cold item co-occur: it scores them 0, ties count against the target
    assert protocols["cold-items"]["results"]["item-knn"]["recall@10"] == 0.0
