"""The downstream client (straight from Cassandra, and through a real `fusionrec serve` process),
and the `tag-items` and `search-eval` commands."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from bench.harness import free_port, served_api
from fusionrec.cli import app
from serving.client import ApiClient, ApiError, CassandraListReader
from shopdata.loader import Dataset
from streams.stores import SQLiteStore
from streams.stores.cassandra import CassandraStore
from tests.serving.conftest import fill


@pytest.fixture
def cassandra_filled(
    services: dict[str, str], cassandra_keyspace: str, shop: Dataset, bundles: list[Path]
) -> Iterator[CassandraStore]:
    s = CassandraStore([services["cassandra_host"]], int(services["cassandra_port"]), cassandra_keyspace)
    s.setup()
    fill(s, shop, bundles[0])
    yield s
    s.close()


@contextmanager
def _served(tmp_path: Path, shop_dir: Path, bundle: Path, store_url: str, *extra: str) -> Iterator[ApiClient]:
    """A real `fusionrec serve` process (its own process group), ready (/readyz 200), and a client for it."""
    args = ["--bundle", str(bundle), "--store", store_url, "--cache", str(tmp_path / "cache"), *extra]
    with served_api(args, tmp_path / "serve.log", free_port()) as base, ApiClient(base) as api:
        yield api


@pytest.mark.integration
def test_list_reader_reads_straight_from_cassandra(cassandra_filled: CassandraStore, shop: Dataset) -> None:
    user = sorted(shop.by_user())[0]
    with CassandraListReader([cassandra_filled.hosts[0]], cassandra_filled.port, cassandra_filled.keyspace) as r:
        got = r.get(user)
        assert got is not None and got == cassandra_filled.get_recommendations(user)
        assert len(got.items) == 20 and r.get("nobody") is None


@pytest.mark.integration
def test_api_client_against_a_served_process(
    cassandra_filled: CassandraStore, shop: Dataset, shop_dir: Path, bundles: list[Path], tmp_path: Path
) -> None:
    with _served(tmp_path, shop_dir, bundles[0], cassandra_filled.url) as api:
        user = sorted(shop.by_user())[0]
        body = api.recommendations(user, k=5)
        assert body["source"] == "stored" and len(body["items"]) == 5
        stored = cassandra_filled.get_recommendations(user)
        assert stored is not None and [i["item_id"] for i in body["items"]] == stored.item_ids()[:5]
        assert api.search(shop.items[0].title, k=3, user_id=user)["personalized"] is True
        assert len(api.similar(shop.items[0].item_id, k=4)["items"]) == 4
        with pytest.raises(ApiError) as err:
            api.recommendations(user, k=0)
        assert err.value.status == 422 and err.value.body["problems"][0]["field"] == "k"


def test_tag_items_writes_file_and_store(shop_dir: Path, exports: dict[str, Path], tmp_path: Path) -> None:
    reviews = tmp_path / "reviews.csv"
    reviews.write_text(
        'item_id,text\nI00001,"Rich chocolaty espresso crema, a chocolaty espresso crema every morning"\n'
    )
    out, db = tmp_path / "tags.jsonl", tmp_path / "tags.db"
    result = CliRunner().invoke(
        app,
        ["tag-items", "--data", str(shop_dir), "--reviews", str(reviews), "--encoder", str(exports["int8"]),
         "--out", str(out), "--store", f"sqlite:///{db}", "--k", "4"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 120 and all(1 <= len(r["tags"]) <= 4 for r in rows)
    store = SQLiteStore(db)
    stored = store.get_item_tags([r["item_id"] for r in rows])
    assert {i: [t for t, _ in v] for i, v in stored.items()} == {r["item_id"]: [t for t, _ in r["tags"]] for r in rows}
    # each tag is a phrase of the item's own text or reviews, scored highest first
    items = {it["item_id"]: it for it in _items_csv(shop_dir)}
    for r in rows:
        text = (items[r["item_id"]]["title"] + " " + (reviews.read_text() if r["item_id"] == "I00001" else "")).lower()
        words = set(text.replace(",", " ").replace("-", " ").split())
        assert all(set(t.split()) <= words for t, _ in r["tags"]), (r, text)
        assert [s for _, s in r["tags"]] == sorted((s for _, s in r["tags"]), reverse=True)
    assert any("chocolaty" in t or "crema" in t for t, _ in next(r for r in rows if r["item_id"] == "I00001")["tags"])


def _items_csv(root: Path) -> list[dict[str, str]]:
    import csv

    with (root / "items.csv").open() as fh:
        return list(csv.DictReader(fh))


def test_search_eval_reports_every_mode(shop_dir: Path, bundles: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "search.json"
    result = CliRunner().invoke(
        app,
        ["search-eval", "--data", str(shop_dir), "--bundle", str(bundles[0]), "--json", str(out),
         "--report", str(tmp_path / "rep"), "--cache", str(tmp_path / "cache"), "--tune-users", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    body = json.loads(out.read_text())
    table = body["test"]["table"]
    assert set(table) == {"category", "known-item", "all"}
    for modes in table.values():
        assert set(modes) == {"bm25", "dense", "hybrid", "personal"}
        assert all(0 <= m["mrr@10"] <= m["recall@10"] <= 1 for m in modes.values())
    assert body["test"]["users"] == 300 and table["known-item"]["bm25"]["queries"] > 0
    assert (tmp_path / "rep" / "search.png").stat().st_size > 0


def test_search_eval_lists_follow_the_workers_new_item_slots(
    shop_dir: Path, bundles: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """search-eval's offline lists are the worker's: a shop's worker.new_items_* reach them too."""
    import fusionrec.commands.context as context
    import serving.resources as resources

    real = resources.BundleRanker
    policies = []

    def spy(bundle: object, **kw: object) -> object:
        policies.append(kw.get("policy"))
        return real(bundle, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(resources, "BundleRanker", spy)
    monkeypatch.setattr(context, "_loaded", [])  # read afresh with the variables below (one process per command)
    monkeypatch.setenv("FUSIONREC_WORKER__NEW_ITEMS_EVERY", "5")
    monkeypatch.setenv("FUSIONREC_WORKER__NEW_ITEMS_AFTER", "4")
    result = CliRunner().invoke(
        app,
        ["search-eval", "--data", str(shop_dir), "--bundle", str(bundles[0]), "--json", str(tmp_path / "s.json"),
         "--cache", str(tmp_path / "cache"), "--tune-users", "100"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert policies and all(p is not None and (p.new_items_every, p.new_items_after) == (5, 4) for p in policies)


def test_several_worker_processes_share_one_metrics_view(
    shop: Dataset, shop_dir: Path, bundles: list[Path], tmp_path: Path
) -> None:
    db = tmp_path / "workers.db"
    store = SQLiteStore(db)
    store.setup()
    fill(store, shop, bundles[0])
    store.close()
    with _served(tmp_path, shop_dir, bundles[0], f"sqlite:///{db}", "--workers", "2") as api:
        for _ in range(11):
            assert len(api.search("running shoe", k=3)["items"]) == 3
        metrics = httpx.get(f"{api.base_url}/metrics").text
    line = next(ln for ln in metrics.splitlines() if ln.startswith("fusionrec_api_requests_total{") and
                'endpoint="/v1/search"' in ln and 'status="200"' in ln)  # fmt: skip
    assert float(line.rsplit(" ", 1)[1]) == 11.0  # 11 searches, summed over both worker processes
