"""Authentication and TLS on both hops, against the real secure services (deploy/local/secure.sh): the
whole path works with them, every wrong or missing credential is refused with one `error:` line that
says what to fix, and no password ever appears in an output or a log."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from bench.harness import WorkerProcess, assert_folds_exactly, free_port, read_to_end, served_api, wait_committed
from fusionrec.wiring import ensure_encoder
from serving.auth import READ, KeyRecord, append_key, hash_key, new_key
from shopdata import load_data
from streams.replay import produce_records
from streams.stores import open_store
from streams.stores.cassandra import CassandraStore, connect
from tests.cli import assert_error, run_cli
from tests.secure.conftest import HOME, Secure

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.integration, pytest.mark.secure]

EVENTS = 2000
WRONG = "wrong-password-0123456789abcdef"


@pytest.fixture
def names(unique: str) -> dict[str, str]:
    return {
        "topic": f"secure-{unique}",
        "dead_letter_topic": f"secure-{unique}.dlq",
        "items_topic": f"secure-{unique}.items",
        "group": f"g-{unique}",
        "keyspace": f"s_{unique}",
    }


def _env(secure: Secure, names: dict[str, str], toml: Path | None = None) -> dict[str, str]:
    return {
        "FUSIONREC_CONFIG": str(toml or secure.toml),
        "FUSIONREC_KAFKA__TOPIC": names["topic"],
        "FUSIONREC_KAFKA__DEAD_LETTER_TOPIC": names["dead_letter_topic"],
        "FUSIONREC_KAFKA__ITEMS_TOPIC": names["items_topic"],
        "FUSIONREC_KAFKA__GROUP": names["group"],
        "FUSIONREC_CASSANDRA__KEYSPACE": names["keyspace"],
    }


def test_the_whole_path_runs_with_auth_on_both_hops(secure: Secure, names: dict[str, str], tmp_path: Path) -> None:
    """replay (SCRAM + mTLS) -> worker (faust/aiokafka, its dead-letter producer, the writer process)
    -> Cassandra (password + TLS) -> the lists read back through the store, `fusionrec recommend`
    and the API (`fusionrec serve` logged in to Cassandra, API keys on: a request without one is refused)."""
    env = _env(secure, names)
    replay = run_cli("replay", "--limit", str(EVENTS), env=env)
    assert replay.returncode == 0, replay.stderr[-3000:]
    assert f"produced {EVENTS} events" in replay.stdout
    produce_records(secure.kafka, names["topic"], [(b"U-bad", b"{not json")], progress=False)  # a dead letter
    worker = WorkerProcess(
        tmp_path / "worker.log",
        topic=names["topic"],
        dead_letter_topic=names["dead_letter_topic"],
        group=names["group"],
        keyspace=names["keyspace"],
        env=env,
    ).start()
    try:
        wait_committed(secure.kafka, names["group"], names["topic"], 240, worker.alive)
    finally:
        code = worker.stop()
    assert code == 0 and "worker_start" in worker.log(), worker.log()[-3000:]
    assert "writer_process_started" in worker.log()  # the child process logged in too
    letters = read_to_end(secure.kafka, names["dead_letter_topic"])
    assert [m.value() for m in letters] == [b"{not json"]  # written by the worker's own (faust) producer

    c = secure.cassandra
    store = open_store(f"cassandra://127.0.0.1:{c.port}/{names['keyspace']}", cassandra=c, create=False)
    assert isinstance(store, CassandraStore)
    store.setup()
    try:
        expected = assert_folds_exactly(store, load_data(None).events[:EVENTS])
        user = sorted(expected)[0]
        stored = store.get_recommendations(user)
    finally:
        store.close()
    assert stored is not None and len(stored.items) > 0
    shown = run_cli("recommend", user, "--json", env=env)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert [item_id for item_id, _ in json.loads(shown.stdout)["items"]] == stored.item_ids()
    api_log = _read_through_the_api(env, names, user, stored.item_ids(), tmp_path, c.port)
    secure.assert_no_secret(replay.stdout + replay.stderr, worker.log(), shown.stdout + shown.stderr, api_log)

    cluster, session = connect(c.hosts, c.port, access=c)
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {names['keyspace']}", timeout=60)
    finally:
        cluster.shutdown()


def _read_through_the_api(
    env: dict[str, str], names: dict[str, str], user: str, expected: list[str], tmp_path: Path, port_of_cassandra: int
) -> str:
    """The API's own hop: `fusionrec serve` over the secure keyspace with an API key file; returns its log."""
    encoder = ensure_encoder(REPO / "models" / "encoder-int8")  # numpy export, once per checkout
    key = new_key()
    append_key(tmp_path / "keys.jsonl", KeyRecord("secure-test", hash_key(key), frozenset({READ}), None))
    port = free_port()
    serve_env = {**env, "FUSIONREC_SERVE__API_KEYS_FILE": str(tmp_path / "keys.jsonl")}
    store = f"cassandra://127.0.0.1:{port_of_cassandra}/{names['keyspace']}"
    args = ["--store", store, "--encoder", str(encoder), "--cache", str(tmp_path / "cache")]
    with served_api(args, tmp_path / "serve.log", port, 300, serve_env) as base:
        path = f"/v1/users/{user}/recommendations?k={len(expected)}"
        refused = httpx.get(base + path, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"] == "unauthorized"
        got = httpx.get(base + path, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert got.status_code == 200, got.text
        assert got.json()["source"] == "stored" and [i["item_id"] for i in got.json()["items"]] == expected
    log = (tmp_path / "serve.log").read_text()
    assert key not in log
    return log


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("wrong_password", ("refused the SCRAM-SHA-512 login of user 'fusionrec'", "kafka.password")),
        ("plaintext_client", ("closed the connection at the first request", "expects TLS")),
        ("unknown_ca", ("brokers' certificate is not signed by the CA in kafka.ssl_ca_file",)),
        ("expired_certificate", ("brokers refused this client's certificate", "expired")),
    ],
)
def test_kafka_refuses_each_wrong_credential(
    secure: Secure,
    bad_certs: dict[str, Path],
    names: dict[str, str],
    tmp_path: Path,
    case: str,
    needles: tuple[str, ...],
) -> None:
    variants = {
        "wrong_password": {"password": WRONG},
        "plaintext_client": {"bootstrap": secure.config["kafka"]["bootstrap"]},
        "unknown_ca": {"ssl_ca_file": str(bad_certs["other_ca"])},
        "expired_certificate": {
            "ssl_cert_file": str(bad_certs["expired"]),
            "ssl_key_file": str(bad_certs["expired_key"]),
        },
    }
    toml = secure.variant(tmp_path / "f.toml", "kafka", replace=case == "plaintext_client", **variants[case])
    proc = run_cli("replay", "--limit", "10", env=_env(secure, names, toml), timeout=120)
    assert_error(proc, *needles)
    secure.assert_no_secret(proc.stdout, proc.stderr, extra=[WRONG])


@pytest.mark.parametrize(
    ("case", "needles"),
    [
        ("wrong_password", ("refused the login of role 'fusionrec'", "cassandra.password")),
        ("no_login", ("requires a login", "cassandra.username")),
        ("plaintext_client", ("closed the connection before the protocol started", "requires TLS")),
        ("unknown_ca", ("node's certificate is not signed by the CA in cassandra.ssl_ca_file",)),
    ],
)
def test_cassandra_refuses_each_wrong_credential(
    secure: Secure,
    bad_certs: dict[str, Path],
    names: dict[str, str],
    tmp_path: Path,
    case: str,
    needles: tuple[str, ...],
) -> None:
    variants = {
        "wrong_password": {"password": WRONG},
        "no_login": {"username": None, "password": None},
        "plaintext_client": {"ssl_ca_file": None},
        "unknown_ca": {"ssl_ca_file": str(bad_certs["other_ca"])},
    }
    toml = secure.variant(tmp_path / "f.toml", "cassandra", **variants[case])
    proc = run_cli("recommend", "U00001", env=_env(secure, names, toml), timeout=120)
    assert_error(proc, *needles)
    secure.assert_no_secret(proc.stdout, proc.stderr, extra=[WRONG])


def test_a_worker_with_a_wrong_cassandra_password_stops_at_once(
    secure: Secure, names: dict[str, str], tmp_path: Path
) -> None:
    """A refused login is a ConfigError, not an outage: the worker does not wait out the store (120 s)."""
    toml = secure.variant(tmp_path / "f.toml", "cassandra", password=WRONG)
    proc = run_cli("worker", env=_env(secure, names, toml), timeout=100)
    assert_error(proc, "refused the login of role 'fusionrec'")
    assert "store_not_ready" not in proc.stderr
    secure.assert_no_secret(proc.stdout, proc.stderr, extra=[WRONG])


def test_no_service_log_holds_a_password(secure: Secure) -> None:
    """The brokers and the node log their configuration: every password there must be masked."""
    logs = [p for p in HOME.rglob("*.log*") if p.is_file()]
    assert {p.name for p in logs} >= {"kafka.log", "cassandra.log", "format.log"}
    secure.assert_no_secret(*(p.read_text(errors="replace") for p in logs))
