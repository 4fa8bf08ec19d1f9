"""A production worker and API need the bundle and the store, never the training files:
`fusionrec worker --bundle B` and `fusionrec serve --bundle B`, started with no --data, against the
REAL Kafka and Cassandra, give every user the list the worker made before bundles carried their own
catalog and popularity (when `--data` supplied the popularity for cold starts)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from confluent_kafka import Producer

from bench.harness import WorkerProcess, free_port, served_api, wait_committed
from fusionrec.wiring import build_pipeline
from ranker.bundle import ModelBundle
from ranker.online import BundleRanker
from schemas.codec import encode_event
from schemas.events import Event, EventType
from schemas.recommendations import RecommendationList
from shopdata import Dataset, load_dataset
from streams.embedded import records_from_values, run_embedded
from streams.replay import ensure_topics
from streams.stores import MemoryStore
from streams.stores.cassandra import CassandraStore

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _events(shop: Dataset) -> list[Event]:
    """The shop's events plus two users the model knows nothing about (their lists are popularity)."""
    ts = shop.events[-1].ts + 1
    cold = [
        Event("cold-1", EventType.VIEW, "COLD1", ts, item_id="NOT-IN-CATALOG"),
        Event("cold-2", EventType.SEARCH, "COLD2", ts + 1, query="anything"),
    ]
    return [*shop.events, *cold]


def _lists_made_with_data(bundle: Path, shop: Dataset, events: list[Event]) -> MemoryStore:
    """What the worker stored before, when `--data` gave it the dataset's top-500 items for cold
    starts: the lists and states, in a memory store."""
    counts = shop.item_counts()
    popular = sorted(counts, key=lambda i: (-counts[i], i))[:500]
    store = MemoryStore()
    pipeline = build_pipeline(store, BundleRanker(ModelBundle.load(bundle), popular=popular), k=20)
    records = records_from_values((encode_event(e) for e in events), source="file:reference")
    run_embedded(records, pipeline, store, batch_size=250, progress=False)
    return store


def assert_same_ranking(got: RecommendationList, want: RecommendationList, tol: float = 1e-4) -> None:
    """The same list up to float noise: the user encoder runs over differently composed batches in
    the two runtimes, so scores may differ in the last digits and near-tied items may swap places
    (or one may cross the cut at k). Everything else must be equal."""
    assert len(got.items) == len(want.items), got.user_id
    assert [s.score for s in got.items] == pytest.approx([s.score for s in want.items], abs=tol), got.user_id
    g, w = dict(got.items), dict(want.items)
    for item in g.keys() & w.keys():
        assert g[item] == pytest.approx(w[item], abs=tol), (got.user_id, item)
    cut = min(got.items[-1].score, want.items[-1].score)
    for item, score in [*((i, g[i]) for i in g.keys() - w.keys()), *((i, w[i]) for i in w.keys() - g.keys())]:
        assert score == pytest.approx(cut, abs=tol), f"{got.user_id}: {item} ({score}) is in one list only"
    for a, b in zip(got.items, want.items, strict=True):  # a swap is only ever between near-ties
        assert a.item_id == b.item_id or a.score == pytest.approx(b.score, abs=tol), got.user_id


def test_worker_and_api_run_from_the_bundle_alone(
    services: dict[str, str],
    unique: str,
    store: CassandraStore,
    bundles: list[Path],
    shop_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    shop = load_dataset(shop_dir)
    events = _events(shop)
    reference = _lists_made_with_data(bundles[1], shop, events)
    expected = reference.lists
    topic, group = f"bundle-only-{unique}", f"g-{unique}"
    ensure_topics(services["bootstrap"], {topic: 3, f"{topic}.dlq": 1})
    worker = WorkerProcess(
        tmp_path / "worker.log",
        topic=topic,
        dead_letter_topic=f"{topic}.dlq",
        group=group,
        keyspace=store.keyspace,
        batch_size=250,
        # a dataset in the settings, which --bundle must leave unread; the reference ranks every batch
        # with the stage, so no batch may shed it for being late (the events wait for the worker's start)
        env={"FUSIONREC_DATA": str(shop_dir), "FUSIONREC_WORKER__STAGE_BUDGET_MS": "0"},
    )
    worker.args += ["--bundle", str(bundles[1])]  # no --data
    assert "--data" not in worker.args
    worker.start()
    try:
        # idempotent: a retried request must not reorder a user's events (their order is their history)
        producer = Producer({"bootstrap.servers": services["bootstrap"], "linger.ms": 5, "enable.idempotence": True})
        for ev in events:
            producer.produce(topic, key=ev.user_id.encode(), value=encode_event(ev))
        producer.flush(30)
        wait_committed(services["bootstrap"], group, topic, 300, alive=worker.alive)
    finally:
        assert worker.stop() == 0, worker.log()[-3000:]
    assert "dataset_loaded" not in worker.log()  # it read no dataset, although the settings name one

    assert set(expected) == {e.user_id for e in events}
    states = store.get_states(sorted(expected))
    for user, want_state in reference.states.items():  # the same histories first: a clearer failure than scores
        got_state = states[user]
        assert (got_state.n_events, got_state.recent_items, got_state.recent_types, got_state.recent_queries) == (
            want_state.n_events,
            want_state.recent_items,
            want_state.recent_types,
            want_state.recent_queries,
        ), f"{user}; the worker's log:\n{worker.log()[-4000:]}"
    for user, want in expected.items():
        got = store.get_recommendations(user)
        assert got is not None, user
        assert (got.source, got.model_version) == (want.source, want.model_version), user
        if want.source == "personal":
            assert_same_ranking(got, want)
        else:  # popularity (and a searcher's list): the same items; scores as Cassandra's 32-bit floats keep them
            assert got.item_ids() == want.item_ids(), user
            assert [s.score for s in got.items] == pytest.approx([s.score for s in want.items], rel=1e-6), user
    assert expected["COLD1"].source == "popular" and expected["COLD2"].source in {"popular", "search"}

    args = ["--bundle", str(bundles[1]), "--store", store.url, "--cache", str(tmp_path / "cache")]
    monkeypatch.setenv("FUSIONREC_DATA", str(shop_dir))  # a dataset in the settings, which --bundle must leave unread
    with served_api(args, tmp_path / "serve.log", free_port()) as base:
        for user in [*sorted(expected)[:25], "COLD1"]:
            body = httpx.get(f"{base}/v1/users/{user}/recommendations", params={"k": 20}, timeout=10).json()
            stored = store.get_recommendations(user)
            assert stored is not None and [i["item_id"] for i in body["items"]] == stored.item_ids(), user
            assert body["model_version"] == expected[user].model_version
        item = shop.items[0]
        similar = httpx.get(f"{base}/v1/items/{item.item_id}/similar", params={"k": 4}, timeout=10).json()
        assert len(similar["items"]) == 4 and all(i["title"] for i in similar["items"])
        found = httpx.get(f"{base}/v1/search", params={"q": item.title, "k": 5}, timeout=10).json()
        assert item.item_id in [i["item_id"] for i in found["items"]]
    serve_log = (tmp_path / "serve.log").read_text()
    assert "dataset_loaded" not in serve_log and f"serving {len(shop.items)} items" in serve_log
