"""API keys, scopes, rate and size limits, CORS (serving.auth): the pure core with a fake clock,
the app over HTTP, the `keys` commands, and a real `fusionrec serve` whose output must never hold
a key."""

from __future__ import annotations

import json
import logging
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from starlette.routing import Route
from typer.testing import CliRunner

from bench.harness import free_port, served_api
from fusionrec.cli import app as cli_app
from fusionrec.settings import load_settings
from schemas.errors import ConfigError
from serving.app import create_app
from serving.auth import (
    ADMIN,
    READ,
    SEARCH,
    Guard,
    GuardMiddleware,
    KeyRecord,
    KeyRing,
    TokenBucket,
    append_key,
    hash_key,
    load_guard,
    new_key,
    read_keys,
    required_scope,
)
from serving.client import ApiClient, ApiError
from serving.resources import load_resources
from serving.service import ServingService
from serving.settings import ServeSettings
from shopdata.loader import Dataset
from streams.stores import MemoryStore, SQLiteStore
from tests.cli import assert_error, run_cli

# -- the core: keys, files, scopes, the bucket ------------------------------------------------


def test_keys_are_random_and_only_their_hash_is_kept() -> None:
    a, b = new_key(), new_key()
    assert a != b and a.startswith("frk_") and len(a) >= 40
    assert hash_key(a) == hash_key(a) != hash_key(b)
    assert hash_key(a).startswith("sha256:") and len(hash_key(a)) == len("sha256:") + 64 and a not in hash_key(a)


def test_keyring_finds_only_the_exact_key() -> None:
    key = new_key()
    ring = KeyRing([KeyRecord("shop", hash_key(key), frozenset({READ}))])
    found = ring.find(key)
    assert found is not None and found.id == "shop" and len(ring) == 1
    assert ring.find(key[:-1]) is None and ring.find(key + "x") is None and ring.find("") is None
    assert ring.find(hash_key(key)) is None  # the stored hash is not a key


def test_keys_file_round_trip_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.jsonl"
    k1, k2 = new_key(), new_key()
    append_key(path, KeyRecord("shop", hash_key(k1), frozenset({READ, SEARCH}), None, "2026-01-01T00:00:00+00:00"))
    path.write_text(path.read_text() + "# a comment\n\n")
    append_key(path, KeyRecord("ops", hash_key(k2), frozenset({ADMIN}), 5.0))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    got = read_keys(path)
    assert [(r.id, r.scopes, r.rate_limit_per_s) for r in got] == [
        ("shop", frozenset({READ, SEARCH}), None),
        ("ops", frozenset({ADMIN}), 5.0),
    ]
    assert k1 not in path.read_text() and k2 not in path.read_text()
    with pytest.raises(ConfigError, match="'shop' exists already"):
        append_key(path, KeyRecord("shop", hash_key(new_key()), frozenset({READ})))


GOOD_HASH = "sha256:" + "ab" * 32


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("{not json", "line 2: not JSON"),
        ('["a"]', "line 2: expected a JSON object"),
        (json.dumps({"id": "x", "hash": GOOD_HASH, "scopes": ["read"]}), "line 2: scopes must be"),
        (json.dumps({"id": "x", "hash": GOOD_HASH, "scopes": []}), "line 2: scopes must be"),
        (json.dumps({"id": "x", "hash": "sha256:short", "scopes": [READ]}), "line 2: hash must be"),
        (json.dumps({"id": "x y", "hash": GOOD_HASH, "scopes": [READ]}), "line 2: id must be"),
        (json.dumps({"id": "x", "hash": GOOD_HASH, "scopes": [READ], "scope": "a"}), "unknown field(s) scope"),
        (json.dumps({"id": "x", "hash": GOOD_HASH, "scopes": [READ], "rate_limit_per_s": -1}), "rate_limit_per_s"),
        (json.dumps({"id": "a", "hash": GOOD_HASH, "scopes": [READ]}), "id(s) a appear more than once"),
    ],
)
def test_bad_keys_files_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "keys.jsonl"
    path.write_text(json.dumps({"id": "a", "hash": GOOD_HASH, "scopes": [READ]}) + "\n" + line + "\n")
    with pytest.raises(ConfigError) as err:
        read_keys(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_or_empty_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no such file.*fusionrec keys create"):
        load_guard(ServeSettings(api_keys_file=str(tmp_path / "none.jsonl")))
    (tmp_path / "empty.jsonl").write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="holds no keys"):
        load_guard(ServeSettings(api_keys_file=str(tmp_path / "empty.jsonl")))


@pytest.mark.parametrize(
    ("path", "scope"),
    [
        ("/", None),
        ("/healthz", None),
        ("/readyz", None),
        ("/console/app.js", None),
        ("/v1/users/U1/recommendations", READ),
        ("/v1/users/U1/activity", READ),
        ("/v1/items/I1/similar", READ),
        ("/v1/items/I1", READ),
        ("/v1/model", READ),
        ("/v1/console/live", READ),
        ("/v1/search", SEARCH),
        ("/v1/searchall", ADMIN),  # a prefix match is by whole segments
        ("/metrics", ADMIN),
        ("/docs", ADMIN),
        ("/openapi.json", ADMIN),
        ("/redoc", ADMIN),
        ("/v2/anything", ADMIN),  # nothing is public by accident
        ("//metrics", ADMIN),
    ],
)
def test_required_scope_by_path(path: str, scope: str | None) -> None:
    assert required_scope(path) == scope


def test_metrics_scope_public_opens_only_metrics_and_docs() -> None:
    assert [required_scope(p, metrics_public=True) for p in ("/metrics", "/docs", "/openapi.json", "/redoc")] == [
        None
    ] * 4
    assert required_scope("/v1/search", metrics_public=True) == SEARCH
    assert required_scope("/v2/x", metrics_public=True) == ADMIN


def test_token_bucket_with_a_fake_clock() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst
    assert bucket.take(100.0) == pytest.approx(0.5)  # one token every 1/rate s
    assert bucket.take(100.25) == pytest.approx(0.25)  # half a token so far
    assert bucket.take(100.5) == 0.0
    assert bucket.take(100.5) > 0.0
    assert [bucket.take(1000.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # idle: refilled to the burst only
    assert bucket.take(1000.0) > 0.0


def test_load_guard_divides_rates_among_processes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "keys.jsonl"
    append_key(path, KeyRecord("own", hash_key(new_key()), frozenset({READ}), 30.0))
    g = load_guard(ServeSettings(api_keys_file=str(path), workers=3, rate_limit_per_s=60.0, rate_burst=10))
    assert g.keys is not None and len(g.keys) == 1
    assert g.rate_limit_per_s == pytest.approx(20.0) and g.rate_burst == 4  # ceil(10 / 3)
    assert read_keys(path)[0].rate_limit_per_s == 30.0
    (record,) = g.keys
    assert record.rate_limit_per_s == pytest.approx(10.0)  # the key's own rate, divided too
    with caplog.at_level(logging.WARNING, logger="fusionrec.serving.auth"):
        open_guard = load_guard(ServeSettings())
    assert open_guard.keys is None
    assert any("NO API KEYS" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["https://shop.example", "http://localhost:3000/"]', ("https://shop.example", "http://localhost:3000")),
        ("https://a.example, https://b.example", ("https://a.example", "https://b.example")),
        ("('https://a.example',)", ("https://a.example",)),  # str() of the tuple: how workers receive it
        ("()", ()),
        ("", ()),
    ],
)
def test_cors_origins_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, expected: tuple[str, ...]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONREC_SERVE__CORS_ORIGINS", value)
    assert load_settings().serve.cors_origins == expected


def test_a_bad_cors_origin_is_a_config_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FUSIONREC_SERVE__CORS_ORIGINS", "https://shop.example/path")
    with pytest.raises(ConfigError, match=r"serve\.cors_origins.*not an origin"):
        load_settings()


# -- the app over HTTP ------------------------------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def service(shop: Dataset, tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> ServingService:
    res = load_resources(
        shop.items,
        encoder=tiny_encoder,
        cache=tmp_path_factory.mktemp("auth-cache"),
        popularity=shop.item_counts(),
        progress=False,
    )
    store = MemoryStore()
    store.setup()
    return ServingService(res, lists=store, catalog=store)


KEYS = {name: new_key() for name in ("reader", "searcher", "ops", "limited")}
SCOPES_OF = {"reader": {READ}, "searcher": {SEARCH}, "ops": {ADMIN}, "limited": {READ}}


def _guard(**kw: Any) -> Guard:
    ring = KeyRing(
        KeyRecord(n, hash_key(k), frozenset(SCOPES_OF[n]), 1.0 if n == "limited" else None) for n, k in KEYS.items()
    )
    return Guard(**{"keys": ring, "rate_limit_per_s": 0.0, "rate_burst": 2, **kw})


def _auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[name]}"}


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def client(service: ServingService, clock: FakeClock) -> Iterator[TestClient]:
    with TestClient(create_app(service, guard=_guard(clock=clock))) as c:
        yield c


REC = "/v1/users/U00001/recommendations"


def test_no_key_or_an_unknown_key_is_401(client: TestClient) -> None:
    r = client.get(REC)
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and "Bearer" in r.json()["detail"]
    assert r.headers["www-authenticate"].startswith("Bearer") and r.headers["content-type"] == "application/json"
    r = client.get(REC, headers={"Authorization": f"Bearer {new_key()}"})
    assert r.status_code == 401 and r.json() == {"error": "unauthorized", "detail": "unknown API key"}
    assert 'error="invalid_token"' in r.headers["www-authenticate"]
    assert client.get(REC, headers={"Authorization": f"Basic {KEYS['reader']}"}).status_code == 401


def test_the_right_scope_is_200_and_a_missing_one_403(client: TestClient) -> None:
    ok = client.get(REC, params={"k": 3}, headers=_auth("reader"))
    assert ok.status_code == 200 and len(ok.json()["items"]) == 3
    assert client.get("/v1/items/I00001/similar", headers=_auth("reader")).status_code == 200
    denied = client.get("/v1/search", params={"q": "shoe"}, headers=_auth("reader"))
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    assert "'search'" in denied.json()["detail"] and 'scope="search"' in denied.headers["www-authenticate"]
    assert client.get("/v1/search", params={"q": "shoe"}, headers=_auth("searcher")).status_code == 200
    assert client.get(REC, headers=_auth("searcher")).status_code == 403
    assert client.get(REC, headers={"X-API-Key": KEYS["reader"]}).status_code == 200  # the other header
    assert client.get(REC, headers={"authorization": f"bearer {KEYS['reader']}"}).status_code == 200


def test_rate_limit_answers_429_with_retry_after(client: TestClient, clock: FakeClock) -> None:
    limited = _auth("limited")  # 1 request/s, burst 2
    assert [client.get(REC, headers=limited).status_code for _ in range(2)] == [200, 200]
    r = client.get(REC, headers=limited)
    assert r.status_code == 429 and r.json()["error"] == "rate_limited" and r.headers["retry-after"] == "1"
    assert client.get(REC, headers=_auth("reader")).status_code == 200  # other keys have their own bucket
    clock.now += 1.0
    assert client.get(REC, headers=limited).status_code == 200
    assert client.get(REC, headers=limited).status_code == 429


def test_retry_after_is_whole_seconds_at_least_one(service: ServingService, clock: FakeClock) -> None:
    with TestClient(create_app(service, guard=_guard(clock=clock, rate_limit_per_s=0.25, rate_burst=1))) as c:
        assert c.get(REC, headers=_auth("reader")).status_code == 200
        r = c.get(REC, headers=_auth("reader"))
        assert r.status_code == 429 and r.headers["retry-after"] == "4"
        clock.now += 3.5
        assert c.get(REC, headers=_auth("reader")).headers["retry-after"] == "1"


def test_request_size_limits(service: ServingService) -> None:
    with TestClient(create_app(service, guard=_guard(max_body_bytes=100, max_header_bytes=1024))) as c:
        big = c.request("GET", REC, content=b"x" * 101, headers=_auth("reader"))
        assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
        assert c.request("GET", REC, content=b"x" * 100, headers=_auth("reader")).status_code == 200
        huge = c.get(REC, headers={**_auth("reader"), "X-Padding": "p" * 1100})
        assert huge.status_code == 431 and huge.json()["error"] == "headers_too_large"
        assert c.get("/healthz", headers={"X-Padding": "p" * 1100}).status_code == 431  # public paths too


def test_a_chunked_body_is_counted_as_it_is_read() -> None:
    async def echo(scope: Any, receive: Any, send: Any) -> None:
        body, more = b"", True
        while more:
            message = await receive()
            body, more = body + message.get("body", b""), message.get("more_body", False)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(len(body)).encode()})

    c = TestClient(GuardMiddleware(echo, Guard(max_body_bytes=10)))  # no `with`: the echo app has no lifespan
    assert c.post("/", content=iter([b"12345", b"12345"])).text == "10"
    r = c.post("/", content=iter([b"12345", b"12345", b"1"]))
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_a_key_in_the_url_is_refused_and_not_echoed(client: TestClient) -> None:
    for param in ("api_key", "access_token", "API_KEY"):
        r = client.get(REC, params={param: KEYS["reader"]})
        assert r.status_code == 400 and r.json()["error"] == "bad_request" and KEYS["reader"] not in r.text
    assert client.get("/healthz", params={"api_key": "x"}).status_code == 400  # public paths too


def test_cors_is_off_by_default(client: TestClient) -> None:
    r = client.get(REC, headers={**_auth("reader"), "Origin": "https://shop.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    pre = client.options(REC, headers={"Origin": "https://shop.example", "Access-Control-Request-Method": "GET"})
    assert "access-control-allow-origin" not in pre.headers


def test_cors_for_the_configured_origins(service: ServingService) -> None:
    with TestClient(create_app(service, guard=_guard(cors_origins=("https://shop.example",)))) as c:
        pre = c.options(
            REC,
            headers={
                "Origin": "https://shop.example",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "https://shop.example"
        assert "authorization" in pre.headers["access-control-allow-headers"].lower()
        ok = c.get(REC, headers={**_auth("reader"), "Origin": "https://shop.example"})
        assert ok.status_code == 200 and ok.headers["access-control-allow-origin"] == "https://shop.example"
        refused = c.get(REC, headers={"Origin": "https://shop.example"})  # the page can read the 401
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"] == "https://shop.example"
        other = c.get(REC, headers={**_auth("reader"), "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


def test_metrics_and_docs_need_admin_health_is_public(client: TestClient) -> None:
    for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
        assert client.get(path).status_code == 401, path
        assert client.get(path, headers=_auth("reader")).status_code == 403, path
        assert client.get(path, headers=_auth("ops")).status_code == 200, path
    for path in ("/healthz", "/readyz"):
        assert client.get(path).status_code == 200, path
        assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 200, path
    assert client.get(REC, headers=_auth("ops")).status_code == 403  # admin is not every scope
    metrics = client.get("/metrics", headers=_auth("ops")).text
    assert 'status="401"' in metrics  # refusals are counted


def test_metrics_scope_public(service: ServingService) -> None:
    with TestClient(create_app(service, guard=_guard(metrics_public=True))) as c:
        assert c.get("/metrics").status_code == 200 and c.get("/openapi.json").status_code == 200
        assert c.get(REC).status_code == 401


def test_every_v1_route_has_a_scope_of_its_own(service: ServingService) -> None:
    """A new /v1 endpoint must be given a rule in serving.auth: by default only admin keys reach it."""
    app = create_app(service)
    paths = {r.path for r in app.routes if isinstance(r, Route)}
    unclassified = sorted(p for p in paths if p.startswith("/v1/") and required_scope(p) == ADMIN)
    assert not unclassified, f"add these to serving.auth's rules: {unclassified}"
    assert {"/healthz", "/readyz", "/metrics"} <= paths


def test_without_keys_everything_is_open_but_limits_hold(service: ServingService) -> None:
    with TestClient(create_app(service, guard=Guard(max_header_bytes=512))) as c:
        assert c.get(REC).status_code == 200 and c.get("/metrics").status_code == 200
        assert c.get(REC, headers={"X-Padding": "p" * 600}).status_code == 431
        assert c.get(REC, params={"api_key": "x"}).status_code == 400


# -- the commands and the client --------------------------------------------------------------


def test_keys_create_prints_the_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    runner = CliRunner()
    made = runner.invoke(
        cli_app, ["keys", "create", "--id", "shop", "--scopes", "search,recommendations:read", "--file", str(path)]
    )
    assert made.exit_code == 0, made.output
    key = made.stdout.strip()
    assert key.startswith("frk_") and "\n" not in key and "shown only now" in made.stderr
    assert key not in path.read_text() and hash_key(key) in path.read_text()
    (record,) = read_keys(path)
    assert record.id == "shop" and record.scopes == {SEARCH, READ} and record.created
    listed = runner.invoke(cli_app, ["keys", "list", "--file", str(path)])
    assert listed.exit_code == 0 and "shop" in listed.stdout and "recommendations:read,search" in listed.stdout
    assert hash_key(key) not in listed.stdout and hash_key(key)[:15] in listed.stdout  # a hint, never in full


def test_keys_commands_bad_input_is_one_error_line(tmp_path: Path) -> None:
    path = tmp_path / "keys.jsonl"
    assert_error(run_cli("keys", "create", "--id", "x", "--scopes", "serch", "--file", str(path)), "serch")
    assert_error(run_cli("keys", "list"), "serve.api_keys_file")
    path.write_text("{oops\n")
    assert_error(run_cli("keys", "list", "--file", str(path)), "line 1", "not JSON")


def test_client_sends_the_key_from_the_argument_or_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_API_KEY", "from-env")
    assert ApiClient(api_key="given")._http.headers["authorization"] == "Bearer given"
    assert ApiClient()._http.headers["authorization"] == "Bearer from-env"
    monkeypatch.delenv("FUSIONREC_API_KEY")
    assert "authorization" not in ApiClient()._http.headers


# -- a real `fusionrec serve` -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "needles"),
    [(None, ("no such file", "fusionrec keys create")), ('{"id": "x", "scopes": ["search"]}\n', ("line 1", "hash"))],
)
def test_serve_with_an_unusable_keys_file_is_one_error_line(
    shop_dir: Path, tiny_encoder: Path, tmp_path: Path, content: str | None, needles: tuple[str, ...]
) -> None:
    keys = tmp_path / "keys.jsonl"
    if content is not None:
        keys.write_text(content)
    db = tmp_path / "lists.db"
    SQLiteStore(db).setup()
    proc = run_cli(
        "serve", "--items", str(shop_dir / "items.csv"), "--encoder", str(tiny_encoder), "--store", f"sqlite:///{db}",
        "--cache", str(tmp_path / "cache"), "--port", str(free_port()),
        env={"FUSIONREC_SERVE__API_KEYS_FILE": str(keys)}, timeout=120,
    )  # fmt: skip
    assert_error(proc, str(keys), *needles)


def test_a_real_server_never_writes_a_key_to_its_output(
    shop_dir: Path, tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two worker processes (the settings reach them through the environment), keys on: answers
    as scoped, and the server's whole output (stdout + stderr, every process) holds no key."""
    keys = tmp_path / "keys.jsonl"
    reader, searcher, stranger = new_key(), new_key(), new_key()
    append_key(keys, KeyRecord("reader", hash_key(reader), frozenset({READ})))
    append_key(keys, KeyRecord("searcher", hash_key(searcher), frozenset({SEARCH})))
    db = tmp_path / "lists.db"
    SQLiteStore(db).setup()
    monkeypatch.setenv("FUSIONREC_SERVE__API_KEYS_FILE", str(keys))
    monkeypatch.setenv("FUSIONREC_SERVE__CORS_ORIGINS", '["https://shop.example"]')
    log = tmp_path / "serve.log"
    args = ["--items", str(shop_dir / "items.csv"), "--encoder", str(tiny_encoder), "--store", f"sqlite:///{db}",
            "--cache", str(tmp_path / "cache"), "--workers", "2"]  # fmt: skip
    with served_api(args, log, free_port()) as base:
        with ApiClient(base, api_key=reader) as api:
            assert api.recommendations("U00001", k=3)["source"] == "popular"
            with pytest.raises(ApiError) as err:
                api.search("shoe")
            assert err.value.status == 403 and reader not in str(err.value)
        with ApiClient(base, api_key=searcher) as api:
            assert len(api.search("shoe", k=2)["items"]) == 2
        with ApiClient(base, api_key=stranger) as api:
            with pytest.raises(ApiError) as err:
                api.similar("I00001")
            assert err.value.status == 401
        assert httpx.get(f"{base}/v1/search", params={"q": "x", "api_key": searcher}).status_code == 400
        assert httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {reader}"}).status_code == 403
        assert httpx.get(f"{base}/healthz").status_code == 200
    output = log.read_text()
    assert "event=auth keys=2" in output  # the output was captured, and says auth is on
    for secret in (reader, searcher, stranger):
        assert secret not in output
