"""The console in a real headless Chromium, against a real `fusionrec serve` over the demo store:
each view shows what the store and the demo's own data say it should, errors reach the page, the
page asks for an API key on 401, and it calls nothing but the documented API. The Live view is
checked against a real worker on the real Kafka (integration). Screenshots: out/console/<view>.png."""

from __future__ import annotations

import dataclasses
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

try:
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as exc:  # a failure that says what to install, never a skip
    raise ImportError("the console tests need selenium: `.venv/bin/pip install -e '.[dev]'`") from exc

from prometheus_client import start_http_server

from bench.harness import free_port, named_worker, wait_for
from schemas.codec import encode_event
from schemas.events import Event
from streams.core import BatchOutcome
from streams.metrics import PrometheusSensor
from streams.replay import ensure_topics, produce_records
from streams.stores import SQLiteStore
from tests.console.conftest import SHOTS, Demo, Served, console_api, metrics_urls_env, serve_args

CONSOLE = Path(__file__).resolve().parents[2] / "serving" / "console"
DOCUMENTED = [
    re.compile(p)
    for p in (
        r"/v1/console/live",
        r"/v1/users/[^/]+/activity",
        r"/v1/items/[^/]+",
        r"/v1/items/[^/]+/similar",
        r"/v1/search",
        r"/v1/model",
    )
]


# -- helpers --------------------------------------------------------------------------------------
def load(browser: Any, base: str, route: str) -> None:
    """A fresh page at `route` (about:blank first: a hash-only change would keep the old page)."""
    browser.get("about:blank")
    browser.get(f"{base}/#/{route}")


def wait(browser: Any, ready: Callable[[Any], Any], what: str, timeout: float = 60) -> Any:
    """Polls `ready` until it holds. An element the page re-rendered between finding it and reading
    it (a live chart redraws every poll) is looked for again, not a failure (seen in CI)."""
    return WebDriverWait(
        browser,
        timeout,
        poll_frequency=0.2,
        ignored_exceptions=(NoSuchElementException, StaleElementReferenceException),
    ).until(ready, message=f"waiting for {what}")


def one(browser: Any, css: str) -> Any:
    return browser.find_element(By.CSS_SELECTOR, css)


def every(browser: Any, css: str) -> list[Any]:
    return list(browser.find_elements(By.CSS_SELECTOR, css))


def visible(css: str) -> Callable[[Any], bool]:
    return lambda d: bool(d.find_elements(By.CSS_SELECTOR, css)) and d.find_element(By.CSS_SELECTOR, css).is_displayed()


def typed(browser: Any, css: str, text: str) -> None:
    box = one(browser, css)
    box.clear()
    box.send_keys(text)


def shot(browser: Any, name: str) -> None:
    browser.save_screenshot(str(SHOTS / f"{name}.png"))


def page_error(browser: Any, view: str) -> str:
    box = one(browser, f"#{view}-error")
    return str(box.text) if box.is_displayed() else ""


def busiest_user(demo: Demo) -> str:
    by_user = demo.dataset.by_user()
    return min(by_user, key=lambda u: (-len(by_user[u]), u))


def stored_list(demo: Demo, user: str) -> Any:
    store = SQLiteStore(demo.db)
    store.setup()
    try:
        rec = store.get_recommendations(user)
    finally:
        store.close()
    assert rec is not None, f"the demo stored no list for {user}"
    return rec


# -- the views ------------------------------------------------------------------------------------
def test_user_view_shows_history_list_and_because_lines(browser: Any, console: str, demo: Demo) -> None:
    user = busiest_user(demo)
    history = demo.dataset.by_user()[user]
    titles = {it.item_id: it.title for it in demo.dataset.items}
    item_events = [e for e in history if e.item_id is not None]
    load(browser, console, "user")
    typed(browser, "#user-id", user)
    one(browser, "#user-go").click()
    wait(browser, lambda d: every(d, "[data-testid=user-event]") or page_error(d, "user"), "the user's events")
    assert not page_error(browser, "user")
    assert f"#/user?id={user}" in browser.current_url

    rows = every(browser, "[data-testid=user-event]")
    shown = [r.get_attribute("data-item-id") for r in rows]
    newest_first = item_events[::-1][: len(rows)]
    assert rows and shown == [e.item_id for e in newest_first], "the user's own events, newest first"
    for row, ev in zip(rows[:5], newest_first, strict=False):
        assert titles[ev.item_id] in row.text and ev.type.value in row.text
    queries = [q.text for q in every(browser, "[data-testid=user-query]")]
    assert set(queries) <= {e.query for e in history if e.query}

    rec = stored_list(demo, user)
    stored_ids = [s.item_id for s in rec.items]
    listed = every(browser, "[data-testid=list-item]")
    listed_ids = [li.get_attribute("data-item-id") for li in listed]
    assert listed_ids[: len(stored_ids)] == stored_ids, "the stored list, in its order"
    assert titles[stored_ids[0]] in listed[0].text
    assert one(browser, "#list-source").text.startswith("stored")
    assert one(browser, "#list-model").text == rec.model_version
    because = every(browser, "[data-testid=because]")
    assert because, "no 'because you viewed' line"
    seen = {e.item_id for e in item_events}
    for line in because:
        assert line.text.startswith("because you viewed ")
        assert line.find_element(By.CSS_SELECTOR, "a").get_attribute("data-item-id") in seen
    shot(browser, "user")


def test_item_view_shows_text_and_similar_items_that_link_on(browser: Any, console: str, demo: Demo) -> None:
    items = {it.item_id: it for it in demo.dataset.items}
    user = busiest_user(demo)
    load(browser, console, f"user?id={user}")
    wait(browser, lambda d: every(d, "[data-testid=list-item] a"), "the user's list")
    first = one(browser, "[data-testid=list-item] a")
    item_id = first.get_attribute("data-item-id")
    first.click()  # a link from another view
    wait(browser, visible("#item-result"), "the item")
    it = items[item_id]
    assert f"#/item?id={item_id}" in browser.current_url
    assert one(browser, "#item-title").text == it.title
    assert one(browser, "#item-description").text == it.description.strip()
    assert one(browser, "#item-category").text == (it.category or "–")
    assert one(browser, "#item-brand").text == (it.brand or "–")
    similar = every(browser, "[data-testid=similar-item]")
    assert len(similar) == 10
    assert item_id not in [s.get_attribute("data-item-id") for s in similar]
    shot(browser, "item")

    nxt = similar[0].find_element(By.CSS_SELECTOR, "a")
    nxt_id = nxt.get_attribute("data-item-id")
    nxt.click()
    wait(browser, lambda d: one(d, "#item-title").text == items[nxt_id].title, "the similar item's page")
    assert one(browser, "#item-id").get_attribute("value") == nxt_id


def test_search_view_shows_bm25_dense_and_hybrid_side_by_side(browser: Any, console: str, demo: Demo) -> None:
    target = demo.dataset.items[7]
    load(browser, console, "search")
    typed(browser, "#search-q", target.title)
    typed(browser, "#search-k", "5")
    one(browser, "#search-go").click()
    wait(browser, lambda d: every(d, "[data-testid=search-row]") or page_error(d, "search"), "search results")
    assert not page_error(browser, "search")
    rows = every(browser, "[data-testid=search-row]")
    assert len(rows) == 5
    assert any(target.title in r.text for r in rows), "a title finds its item (or its namesake)"
    for row in rows:
        for name in ("bm25", "dense", "hybrid"):
            float(row.find_element(By.CSS_SELECTOR, f"[data-testid=score-{name}]").text)
        assert not row.find_element(By.CSS_SELECTOR, "[data-testid=score-personal]").is_displayed()
    hybrid = [float(r.find_element(By.CSS_SELECTOR, "[data-testid=score-hybrid]").text) for r in rows]
    assert hybrid == sorted(hybrid, reverse=True), "ranked by the hybrid score"
    shot(browser, "search")

    user = busiest_user(demo)
    one(browser, "#search-personal").click()
    typed(browser, "#search-user", user)
    one(browser, "#search-go").click()
    wait(browser, lambda d: f"user={user}" in d.current_url, "the personal search route")
    wait(browser, lambda d: every(d, "[data-testid=search-row]") or page_error(d, "search"), "personal results")
    answer = httpx.get(f"{console}/v1/search", params={"q": target.title, "k": 5, "user_id": user, "explain": "true"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    rows = every(browser, "[data-testid=search-row]")
    assert [r.get_attribute("data-item-id") for r in rows] == [it["item_id"] for it in body["items"]]
    personal = [r.find_element(By.CSS_SELECTOR, "[data-testid=score-personal]") for r in rows]
    assert all(p.is_displayed() for p in personal) == bool(body["personalized"])
    if body["personalized"]:
        for p, it in zip(personal, body["items"], strict=True):
            assert float(p.text) == pytest.approx(it["scores"]["personal"], abs=1e-3)  # shown to 3 decimals


def test_model_view_shows_the_served_model(browser: Any, console: str) -> None:
    served = httpx.get(f"{console}/readyz").json()["model_version"]
    load(browser, console, "model")
    wait(browser, lambda d: one(d, "#model-version").text or page_error(d, "model"), "the model")
    assert not page_error(browser, "model")
    assert one(browser, "#model-version").text == served
    assert one(browser, "#model-kind").text in ("bundle", "text")
    metrics = every(browser, "[data-testid=validation-metric]")
    assert metrics or one(browser, "#model-no-validation").is_displayed()
    shot(browser, "model-demo")


def test_model_view_shows_the_bundle_its_metrics_and_plots(browser: Any, bundle_console: Served) -> None:
    manifest = json.loads((bundle_console.bundle / "manifest.json").read_text())
    load(browser, bundle_console.base, "model")
    wait(browser, lambda d: one(d, "#model-version").text or page_error(d, "model"), "the model")
    assert not page_error(browser, "model")
    assert one(browser, "#model-version").text == manifest["version"]
    assert one(browser, "#model-variant").text == manifest["variant"]
    assert one(browser, "#model-kind").text == "bundle"
    shown = {}
    for row in every(browser, "[data-testid=validation-metric]"):
        name, value = row.find_elements(By.CSS_SELECTOR, "td")
        shown[name.text] = value.text
    assert set(shown) == set(manifest["validation"])
    for name, value in manifest["validation"].items():
        if isinstance(value, float):
            assert shown[name] == f"{value:.4f}"
    wait(browser, lambda d: every(d, "[data-testid=report-image]"), "the report plot")
    img = one(browser, "[data-testid=report-image]")
    assert img.get_attribute("data-name") == "recall.png"
    wait(browser, lambda d: d.execute_script("return arguments[0].naturalWidth", img) > 0, "the plot to load")
    shot(browser, "model")


def test_personal_search_adds_the_personal_score(browser: Any, bundle_console: Served) -> None:
    user = min(bundle_console.dataset.by_user())
    query = bundle_console.dataset.items[3].title
    load(browser, bundle_console.base, "search")
    typed(browser, "#search-q", query)
    one(browser, "#search-personal").click()
    typed(browser, "#search-user", user)
    one(browser, "#search-go").click()
    wait(browser, lambda d: every(d, "[data-testid=search-row]") or page_error(d, "search"), "personal results")
    assert not page_error(browser, "search")
    params = {"q": query, "k": 10, "user_id": user, "explain": "true"}
    body = httpx.get(f"{bundle_console.base}/v1/search", params=params).json()
    assert body["personalized"], body
    rows = every(browser, "[data-testid=search-row]")
    assert [r.get_attribute("data-item-id") for r in rows] == [it["item_id"] for it in body["items"]]
    for row, it in zip(rows, body["items"], strict=True):
        for name in ("bm25", "dense", "hybrid", "personal"):
            cell = row.find_element(By.CSS_SELECTOR, f"[data-testid=score-{name}]")
            assert cell.is_displayed()
            assert float(cell.text) == pytest.approx(it["scores"][name], abs=1e-3)  # shown to 3 decimals
    final = [float(r.find_element(By.CSS_SELECTOR, "[data-testid=score-final]").text) for r in rows]
    assert final == sorted(final, reverse=True), "ranked by the personalised score"
    shot(browser, "search-personal")


def test_item_view_shows_the_items_tags(browser: Any, bundle_console: Served) -> None:
    load(browser, bundle_console.base, "item?id=I00001")  # tagged by the fill (tests.serving.conftest.TAGGED)
    wait(browser, visible("#item-result"), "the item")
    assert [t.text for t in every(browser, "#item-tags .tag")] == ["trail runner", "cushioned"]


def test_live_view_without_workers_says_where_to_configure_them(browser: Any, console: str) -> None:
    load(browser, console, "live")
    wait(browser, visible("#live-empty"), "the no-workers message")
    assert "no worker metrics configured (serve.worker_metrics_urls)" in one(browser, "#live-empty").text
    assert not every(browser, "[data-testid=worker-block]")
    shot(browser, "live-empty")


def test_live_view_turns_a_workers_counters_into_rates_and_shows_a_dead_one(
    browser: Any, demo: Demo, tmp_path: Path
) -> None:
    """The worker's own Prometheus sensor, served in-process and fed 100-record batches every 0.5 s
    (200 events/s), beside a URL nothing listens on; the API scrapes both, the page does the rest."""
    sensor = PrometheusSensor()
    server, _ = start_http_server(free_port(), "127.0.0.1", registry=sensor.registry)
    up = f"http://127.0.0.1:{server.server_port}/metrics"
    down = f"http://127.0.0.1:{free_port()}/metrics"
    stop = threading.Event()

    def batches() -> None:
        while not stop.wait(0.5):
            sensor.on_batch(
                BatchOutcome(n_records=100, n_applied=98, n_duplicates=2, elapsed_s=0.03, freshness_ms=[150])
            )
            sensor.set_lag("0", 40)

    feeder = threading.Thread(target=batches, daemon=True)
    feeder.start()
    urls = metrics_urls_env([up, down])
    try:
        with console_api(serve_args(demo), tmp_path / "serve.log", worker_metrics_urls=urls) as base:
            load(browser, base, "live")
            block = f"[data-testid=worker-block][data-url='{up}']"
            wait(browser, lambda d: every(d, block), "the worker's block")

            def value(name: str) -> float | None:
                raw = one(browser, f"{block} [data-testid=value-{name}]").get_attribute("data-value")
                return float(raw) if raw else None

            points = f"{block} [data-testid=chart-events] polyline"
            wait(
                browser,
                lambda d: every(d, points) and len(one(d, points).get_attribute("points").split()) >= 3,
                "3 points",
            )
            assert 100 <= (value("events") or 0) <= 400, "about 200 events/s, from consecutive counters"
            assert (value("duplicates") or 0) > 0 and value("dead_letters") == 0
            assert value("lag") == 40
            assert 25 <= (value("batch_p50") or 0) <= 50, "30 ms batches: within the 25-50 ms bucket"
            assert one(browser, f"{block} [data-testid=worker-status]").text == "up"
            dead = f"[data-testid=worker-block][data-url='{down}']"
            assert one(browser, f"{dead} [data-testid=worker-status]").text == "down"
            assert one(browser, f"{dead} [data-testid=worker-error]").text.startswith("error: ")
            assert not one(browser, "#live-empty").is_displayed()
            shot(browser, "live-two-workers")
    finally:
        stop.set()
        feeder.join(5)
        server.shutdown()
        server.server_close()


def test_api_errors_are_shown_in_the_page(browser: Any, console: str) -> None:
    load(browser, console, "item?id=no-such-item")
    wait(browser, visible("#item-error"), "the error")
    assert "404" in one(browser, "#item-error").text and "no-such-item" in one(browser, "#item-error").text
    assert not one(browser, "#item-result").is_displayed()
    load(browser, console, f"search?q={'x' * 300}&k=5")  # longer than the API's limit: a 422 with problems
    wait(browser, visible("#search-error"), "the error")
    assert "422" in one(browser, "#search-error").text


# -- only the documented API ----------------------------------------------------------------------
def _requested_paths(browser: Any, base: str) -> list[tuple[str, str]]:
    """(path, query) of every http request the page made since the log was last read."""
    out = []
    for entry in browser.get_log("performance"):
        msg = json.loads(entry["message"])["message"]
        if msg.get("method") != "Network.requestWillBeSent":
            continue
        url = urlsplit(msg["params"]["request"]["url"])
        if url.scheme in ("http", "https"):
            assert f"{url.scheme}://{url.netloc}" == base, f"a request off the API's origin: {url.geturl()}"
            out.append((url.path, url.query))
    return out


@pytest.mark.parametrize("api", ["console", "bundle_console"])
def test_console_requests_only_the_documented_api(browser: Any, api: str, request: pytest.FixtureRequest) -> None:
    served = request.getfixturevalue(api)
    if isinstance(served, Served):
        base, dataset = served.base, served.dataset
    else:
        base, dataset = served, request.getfixturevalue("demo").dataset
    user = min(dataset.by_user())
    browser.get("about:blank")
    browser.get_log("performance")  # drop what earlier tests left in the log
    load(browser, base, "live")
    wait(browser, visible("#live-empty"), "the live view")
    one(browser, "[data-testid=nav-user]").click()
    typed(browser, "#user-id", user)
    one(browser, "#user-go").click()
    wait(browser, lambda d: every(d, "[data-testid=list-item] a"), "the user's list")
    one(browser, "[data-testid=list-item] a").click()
    wait(browser, lambda d: every(d, "[data-testid=similar-item]"), "similar items")
    one(browser, "[data-testid=nav-search]").click()
    typed(browser, "#search-q", dataset.items[0].title)
    one(browser, "#search-personal").click()
    typed(browser, "#search-user", user)
    one(browser, "#search-go").click()
    wait(browser, lambda d: every(d, "[data-testid=search-row]"), "search results")
    one(browser, "[data-testid=nav-model]").click()
    wait(browser, lambda d: one(d, "#model-version").text, "the model")
    wait(browser, lambda d: all(img.get_attribute("src") for img in every(d, "[data-testid=report-image]")), "plots")

    reports = {urlsplit(r["url"]).path for r in httpx.get(f"{base}/v1/model").json()["reports"]}
    requested = _requested_paths(browser, base)
    paths = [p for p, _ in requested]
    allowed = {"/", "/console/app.js", "/console/style.css", *reports}
    stray = [p for p in paths if p not in allowed and not any(rx.fullmatch(p) for rx in DOCUMENTED)]
    assert not stray, f"the console called undocumented paths: {stray}"
    for rx in DOCUMENTED:
        assert any(rx.fullmatch(p) for p in paths), f"the click-through never called {rx.pattern}"
    assert reports <= set(paths), "the report plots were not fetched"
    searches = [parse_qs(q) for p, q in requested if p == "/v1/search"]
    assert searches and all(s.get("explain") == ["true"] for s in searches)
    assert any(s.get("user_id") == [user] for s in searches)


# -- the API key ----------------------------------------------------------------------------------
READ_KEY, SEARCH_KEY = "frk_console-read", "frk_console-search-only"


def _keyed_app() -> Any:
    """The console's files and a /v1/model behind the API's real key middleware (serving.auth):
    the page's side of authentication, without loading a model to answer one endpoint."""
    from fastapi import FastAPI
    from fastapi.responses import FileResponse, JSONResponse
    from starlette.staticfiles import StaticFiles

    from serving.auth import READ, SEARCH, Guard, GuardMiddleware, KeyRecord, KeyRing, hash_key

    app = FastAPI()
    app.get("/")(lambda: FileResponse(CONSOLE / "index.html", media_type="text/html"))
    model = {"model_version": "keyed-1", "variant": None, "kind": "text", "manifest": {}, "validation": None}
    app.get("/v1/model")(lambda: JSONResponse({**model, "reports": []}))
    app.mount("/console", StaticFiles(directory=CONSOLE), name="console")
    keys = KeyRing(
        [
            KeyRecord("console", hash_key(READ_KEY), frozenset({READ})),
            KeyRecord("searcher", hash_key(SEARCH_KEY), frozenset({SEARCH})),
        ]
    )
    return GuardMiddleware(app, Guard(keys=keys))


@pytest.fixture
def keyed_api() -> Iterator[str]:
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(_keyed_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, 30, "the keyed API")
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_401_and_403_ask_for_an_api_key_which_is_kept_and_sent_as_bearer(browser: Any, keyed_api: str) -> None:
    load(browser, keyed_api, "model")
    browser.execute_script("localStorage.clear()")
    load(browser, keyed_api, "model")
    wait(browser, visible("#auth-panel"), "the API key field")
    assert "401" in one(browser, "#model-error").text and "API key is required" in one(browser, "#model-error").text
    assert "401" in one(browser, "#auth-message").text
    shot(browser, "api-key")

    typed(browser, "#api-key", SEARCH_KEY)  # a key without the read scope: 403, and the field again
    one(browser, "#api-key-save").click()
    wait(browser, lambda d: "403" in one(d, "#model-error").text, "the 403")
    assert "lacks the scope" in one(browser, "#model-error").text
    assert one(browser, "#auth-panel").is_displayed()

    typed(browser, "#api-key", READ_KEY)
    one(browser, "#api-key-save").click()
    wait(browser, lambda d: one(d, "#model-version").text == "keyed-1", "the model, with the key")
    assert not one(browser, "#auth-panel").is_displayed() and not one(browser, "#model-error").is_displayed()
    assert browser.execute_script("return localStorage.getItem('fusionrec.apiKey')") == READ_KEY
    load(browser, keyed_api, "model")  # a new page load: the key is remembered and sent
    wait(browser, lambda d: one(d, "#model-version").text == "keyed-1", "the model, with the kept key")
    browser.execute_script("localStorage.clear()")


# -- Live, against a real worker ------------------------------------------------------------------
def _stamped_now(events: list[Event]) -> Iterator[tuple[bytes, bytes]]:
    """Kafka records whose event time is when they are sent (the generator is pulled at the
    producer's rate), so freshness on the chart is the pipeline's, not the dataset's age."""
    for ev in events:
        yield ev.user_id.encode(), encode_event(dataclasses.replace(ev, ts=int(time.time() * 1000)))


@pytest.mark.integration
def test_live_view_charts_a_real_workers_events(
    browser: Any,
    demo: Demo,
    services: dict[str, str],
    unique: str,
    cassandra_keyspace: str,
    tmp_path: Path,
) -> None:
    topic = f"console-{unique}"
    names = {"topic": topic, "dead_letter_topic": f"{topic}.dlq", "group": f"g-{unique}"}
    names["keyspace"] = cassandra_keyspace
    ensure_topics(services["bootstrap"], {topic: 2, f"{topic}.dlq": 1})
    port = free_port()
    metrics = f"http://127.0.0.1:{port}/metrics"
    worker = named_worker(tmp_path, names, "worker", batch_size=50, env={"FUSIONREC_WORKER__METRICS_PORT": str(port)})
    records = _stamped_now(demo.dataset.events[:4000])
    producer = threading.Thread(
        target=produce_records, args=(services["bootstrap"], topic, records), kwargs={"rate": 200, "progress": False}
    )
    worker.start()
    try:

        def serving_metrics() -> bool:
            try:
                return httpx.get(metrics, timeout=2).status_code == 200
            except httpx.TransportError:
                return not worker.alive()

        wait_for(serving_metrics, 180, "the worker's metrics endpoint")
        assert worker.alive(), worker.log()[-3000:]
        urls = metrics_urls_env([metrics])
        with console_api(serve_args(demo), tmp_path / "serve.log", worker_metrics_urls=urls) as base:
            load(browser, base, "live")
            wait(browser, lambda d: every(d, f"[data-testid=worker-block][data-url='{metrics}']"), "the worker")
            producer.start()

            def events_per_s(d: Any) -> float:
                value = one(d, "[data-testid=value-events]").get_attribute("data-value")
                return float(value) if value else 0.0

            wait(browser, lambda d: events_per_s(d) > 0, "a non-zero events/s", timeout=120)
            points = "[data-testid=chart-events] polyline"
            wait(browser, lambda d: len(one(d, points).get_attribute("points").split()) >= 3, "three events/s points")
            assert one(browser, "[data-testid=worker-status]").text == "up"
            assert not every(browser, "[data-testid=live-empty]:not([hidden])")
            wait(browser, lambda d: one(d, "[data-testid=value-batch_p50]").get_attribute("data-value"), "batch p50")
            shot(browser, "live")
            producer.join(60)
    finally:
        if producer.is_alive():
            producer.join(60)
        assert worker.stop() == 0, worker.log()[-3000:]
