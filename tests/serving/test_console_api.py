"""The endpoints the console reads: activity (events beside the list, with reasons), item, model,
search with its score parts, and the workers' live metrics (a real Prometheus endpoint)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from bench.harness import free_port
from ranker.state import apply_events
from serving.app import create_app
from serving.live import LiveScraper, histogram_quantile, parse_worker_metrics
from serving.resources import ServingResources
from serving.service import ServingService
from shopdata.loader import Dataset
from streams.core import BatchOutcome
from streams.metrics import PrometheusSensor
from streams.stores import UrlStore
from tests.serving.conftest import TAGGED


@pytest.fixture
def console(resources: ServingResources, filled_store: UrlStore, tmp_path: Path) -> Iterator[TestClient]:
    (tmp_path / "metrics_vs_k.png").write_bytes(b"\x89PNG\r\n\x1a\n-plot")
    (tmp_path / "notes.txt").write_text("not a plot")
    service = ServingService(
        resources, lists=filled_store, catalog=filled_store, states=filled_store, reports_dir=tmp_path
    )
    with TestClient(create_app(service)) as c:
        yield c


def _busy_user(shop: Dataset) -> str:
    by_user = shop.by_user()
    return max(sorted(by_user), key=lambda u: len(by_user[u]))


def test_activity_shows_the_state_newest_first_and_each_listed_items_reason(
    console: TestClient, shop: Dataset, resources: ServingResources
) -> None:
    user = _busy_user(shop)
    body = console.get(f"/v1/users/{user}/activity", params={"k": 5}).json()
    events = [e for e in shop.by_user()[user] if e.item_id is not None]
    assert body["state_available"] and body["n_events"] == len(shop.by_user()[user])
    shown = body["events"]
    assert [e["item_id"] for e in shown] == [e.item_id for e in reversed(events[-len(shown) :])]
    assert [e["ts"] for e in shown] == [e.ts for e in reversed(events[-len(shown) :])]
    assert shown[0]["title"] == next(it.title for it in shop.items if it.item_id == events[-1].item_id)
    listing = body["list"]
    assert listing["source"] == "stored" and len(listing["items"]) == 5
    history = {e["item_id"] for e in shown}
    vectors = resources.item_vectors
    for item in listing["items"]:
        reason = item["because"]
        assert reason["item_id"] in history
        # the closest of the user's recent items, in the served model's item space
        row = resources.rows[item["item_id"]]
        sims = {h: float(vectors[row] @ vectors[resources.rows[h]]) for h in history}
        assert reason["similarity"] == pytest.approx(max(sims.values()), abs=1e-3)
        assert sims[reason["item_id"]] == pytest.approx(max(sims.values()), abs=1e-6)


def test_popular_fill_carries_no_reason(console: TestClient, shop: Dataset) -> None:
    body = console.get(f"/v1/users/{_busy_user(shop)}/activity", params={"k": 30}).json()["list"]
    assert body["source"] == "stored+popular"  # the worker stored 20
    assert all(it["because"] for it in body["items"][:20]) and all(it["because"] is None for it in body["items"][20:])


def test_activity_of_an_unknown_user_is_the_popular_list_without_reasons(console: TestClient) -> None:
    body = console.get("/v1/users/nobody-at-all/activity", params={"k": 3}).json()
    assert body["events"] == [] and body["n_events"] is None
    assert body["list"]["source"] == "popular" and all(it["because"] is None for it in body["list"]["items"])


def test_a_list_only_store_still_answers_activity(resources: ServingResources, filled_store: UrlStore) -> None:
    with TestClient(create_app(ServingService(resources, lists=filled_store, catalog=filled_store))) as c:
        body = c.get("/v1/users/nobody/activity").json()
    assert body["state_available"] is False and body["events"] == []


def test_item_model_and_report_endpoints(console: TestClient, shop: Dataset, resources: ServingResources) -> None:
    item = console.get("/v1/items/I00001").json()
    it = next(i for i in shop.items if i.item_id == "I00001")
    assert (item["title"], item["description"], item["category"]) == (it.title, it.description, it.category)
    assert item["tags"] == [t for t, _ in TAGGED["I00001"]]
    assert console.get("/v1/items/NOPE").status_code == 404
    model = console.get("/v1/model").json()
    assert model["model_version"] == resources.model_version and model["kind"] == "bundle"
    assert "files" not in model["manifest"]
    assert model["reports"] == [{"name": "metrics_vs_k.png", "url": "/v1/model/reports/metrics_vs_k.png"}]
    plot = console.get(model["reports"][0]["url"])
    assert plot.status_code == 200 and plot.headers["content-type"] == "image/png"
    assert console.get("/v1/model/reports/notes.txt").status_code == 404
    assert console.get("/v1/model/reports/..%2F..%2Fetc%2Fpasswd").status_code == 404


def test_search_explain_gives_each_part_and_the_same_order(console: TestClient) -> None:
    plain = console.get("/v1/search", params={"q": "trail running shoes", "k": 5}).json()
    explained = console.get("/v1/search", params={"q": "trail running shoes", "k": 5, "explain": "true"}).json()
    assert [i["item_id"] for i in explained["items"]] == [i["item_id"] for i in plain["items"]]
    for item in explained["items"]:
        parts = item["scores"]
        assert set(parts) == {"bm25", "dense", "hybrid", "personal"}
        assert parts["personal"] is None and parts["hybrid"] == pytest.approx(item["score"], abs=1e-3)
    assert "scores" not in plain["items"][0]


def test_the_console_page_and_its_assets_are_served(console: TestClient) -> None:
    page = console.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for asset in ("/console/app.js", "/console/style.css"):
        assert console.get(asset).status_code == 200, asset


def test_live_metrics_from_a_real_worker_endpoint() -> None:
    sensor = PrometheusSensor(CollectorRegistry())
    port = free_port()
    sensor.serve(port)
    url = f"http://127.0.0.1:{port}/metrics"
    down = f"http://127.0.0.1:{free_port()}/metrics"
    clock = [0.0]
    scraper = LiveScraper([url, down], window_s=2.0, clock=lambda: clock[0])
    sensor.on_batch(BatchOutcome(n_records=100, n_applied=98, n_duplicates=2, freshness_ms=[40] * 10, elapsed_s=0.02))
    sensor.set_lag("clickstream:0", 7)
    first = scraper.snapshot()
    up, dead = first["workers"]
    assert (up["events_total"], up["applied_total"], up["duplicates_total"], up["lag"]) == (100, 98, 2, 7)
    assert 0 < up["freshness_ms"]["p50"] <= 50 and dead["up"] is False and dead["error"]
    assert dead["events_total"] is None and dead["freshness_ms"] is None  # every field, null when down
    # later batches are slower: the window since the previous scrape shows it, not the average
    clock[0] = 5.0
    sensor.on_batch(BatchOutcome(n_records=50, n_applied=50, n_duplicates=0, freshness_ms=[900] * 50, elapsed_s=0.3))
    second = scraper.snapshot()["workers"][0]
    assert second["events_total"] == 150 and second["freshness_ms"]["p50"] > 500


def test_histogram_quantile_and_parsing_match_prometheus() -> None:
    buckets = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (float("inf"), 40.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.1 + 0.4 * (20 - 10) / 20)
    assert histogram_quantile(0.99, [(0.1, 0.0), (float("inf"), 5.0)]) == 0.1
    assert histogram_quantile(0.5, [(0.1, 0.0), (float("inf"), 0.0)]) is None
    sample = parse_worker_metrics("# TYPE fusionrec_events_total counter\nfusionrec_events_total 3.0\nother_metric 1\n")
    assert sample.counters["events_total"] == 3 and sample.lag is None
    assert np.isclose(sample.counters["applied_total"], 0.0)


def test_recent_event_times_fold_with_the_items(shop: Dataset) -> None:
    from ranker.state import Delivery, UserState

    user = _busy_user(shop)
    state, _ = apply_events(UserState(user), [Delivery(e, "f", n) for n, e in enumerate(shop.by_user()[user])])
    assert len(state.recent_ts) == len(state.recent_items)
    items = [e for e in shop.by_user()[user] if e.item_id is not None]
    assert list(state.recent_ts) == [e.ts for e in items][-len(state.recent_ts) :]
