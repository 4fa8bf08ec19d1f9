"""Kafka and Cassandra security settings, without services: how each maps onto the clients' own
configuration (confluent-kafka, faust/aiokafka, cassandra-driver), what is refused before connecting,
and that no password ever reaches a repr, a message or a log line."""

from __future__ import annotations

import datetime as dt
import logging
import re
import ssl
from pathlib import Path

import pytest
from cassandra import AuthenticationFailed, ConsistencyLevel
from cassandra.auth import PlainTextAuthProvider
from pydantic import SecretStr

from fusionrec import localcerts
from fusionrec.settings import load_settings
from schemas.errors import ConfigError
from streams.kafka_config import ClientLog, confluent_config, kafka_client_config, refusal
from streams.replay import ensure_topics
from streams.settings import READ_CONSISTENCY, WRITE_CONSISTENCY, CassandraSettings, KafkaSettings
from streams.stores import open_store
from streams.stores.cassandra import CassandraStore, _ConnectTracebacks, _login, _tls
from tests.cli import assert_error, run_cli

SECRET = "s3cret-Pa55-for-tests"


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA, a client certificate and key, an expired one, and a CA nobody trusts, as PEM files."""
    root = tmp_path_factory.mktemp("certs")
    ca = localcerts.make_ca()
    localcerts.write_pem(ca, root / "ca.pem")
    localcerts.write_pem(localcerts.issue(ca, "client", server=False), root / "client.pem", root / "client.key")
    now = dt.datetime.now(dt.UTC)
    old = localcerts.issue(
        ca, "old", server=False, not_before=now - dt.timedelta(days=9), not_after=now - dt.timedelta(days=1)
    )
    localcerts.write_pem(old, root / "expired.pem", root / "expired.key")
    localcerts.write_pem(localcerts.make_ca("other"), root / "other.pem", root / "other.key")
    (root / "garbage.pem").write_text("not a certificate\n")
    return {p.stem if p.suffix == ".pem" else p.stem + "_key": p for p in root.iterdir()}


def _secure(certs: dict[str, Path], **over: object) -> KafkaSettings:
    base: dict[str, object] = {
        "bootstrap": "b1:9093,b2:9093",
        "security_protocol": "SASL_SSL",
        "username": "app",
        "password": SECRET,
        "ssl_ca_file": str(certs["ca"]),
        "ssl_cert_file": str(certs["client"]),
        "ssl_key_file": str(certs["client_key"]),
    }
    return KafkaSettings.model_validate({**base, **over})


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    conf = confluent_config("127.0.0.1:9092", {"group.id": "g"})
    assert {k: v for k, v in conf.items() if k != "logger"} == {
        "bootstrap.servers": "127.0.0.1:9092",
        "security.protocol": "PLAINTEXT",
        "group.id": "g",
    }
    assert isinstance(conf["logger"], ClientLog)
    assert kafka_client_config(KafkaSettings()).faust_options() == {"broker": ["kafka://127.0.0.1:9092"]}


def test_sasl_ssl_maps_onto_confluent_and_aiokafka(certs: dict[str, Path]) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    cfg = kafka_client_config(_secure(certs))
    conf = cfg.confluent({"acks": "all"})
    assert {k: conf[k] for k in conf if k.startswith(("security", "sasl", "ssl"))} == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "app",
        "sasl.password": SECRET,
        "ssl.ca.location": str(certs["ca"]),
        "ssl.certificate.location": str(certs["client"]),
        "ssl.key.location": str(certs["client_key"]),
    }
    assert conf["acks"] == "all" and conf["bootstrap.servers"] == "b1:9093,b2:9093"
    options = cfg.faust_options()
    assert options["broker"] == ["kafka://b1:9093", "kafka://b2:9093"]  # every host, not one mangled URL
    auth = credentials_to_aiokafka_auth(options["broker_credentials"])  # what aiokafka is handed
    assert auth["security_protocol"] == "SASL_SSL" and auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert (auth["sasl_plain_username"], auth["sasl_plain_password"]) == ("app", SECRET)
    ctx = auth["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    assert any("fusionrec local CA" in str(c.get("subject")) for c in ctx.get_ca_certs())
    assert SECRET not in repr(cfg) and SECRET not in repr(options["broker_credentials"])


def test_ssl_and_sasl_plaintext_variants(certs: dict[str, Path]) -> None:
    from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

    tls = kafka_client_config(KafkaSettings(security_protocol="ssl", ssl_ca_file=str(certs["ca"])))
    auth = credentials_to_aiokafka_auth(tls.faust_options()["broker_credentials"])
    assert auth["security_protocol"] == "SSL" and isinstance(auth["ssl_context"], ssl.SSLContext)
    assert "sasl.username" not in tls.security and tls.security["security.protocol"] == "SSL"
    sasl = kafka_client_config(
        KafkaSettings(security_protocol="SASL_PLAINTEXT", sasl_mechanism="scram-sha-256", username="u", password="p")
    )
    auth = credentials_to_aiokafka_auth(sasl.faust_options()["broker_credentials"])
    assert (auth["security_protocol"], auth["sasl_mechanism"], auth["ssl_context"]) == (
        "SASL_PLAINTEXT",
        "SCRAM-SHA-256",
        None,
    )
    assert not any(k.startswith("ssl.") for k in sasl.security)


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"username": None}, "needs kafka.username and kafka.password"),
        ({"password": None}, "needs kafka.username and kafka.password"),
        ({"security_protocol": "PLAINTEXT", "ssl_ca_file": None}, "never sends them"),
        ({"security_protocol": "SASL_PLAINTEXT"}, "does not use TLS"),
        ({"ssl_ca_file": "/nonexistent/ca.pem"}, "kafka.ssl_ca_file: /nonexistent/ca.pem: no such file"),
        ({"ssl_key_file": None}, "kafka.ssl_cert_file and kafka.ssl_key_file go together"),
        ({"ssl_ca_file": "GARBAGE"}, "kafka.ssl_ca_file"),
        ({"ssl_key_file": "OTHER_KEY"}, "kafka.ssl_cert_file / kafka.ssl_key_file"),
    ],
)
def test_settings_that_cannot_work_are_one_config_error(
    certs: dict[str, Path], over: dict[str, object], needle: str
) -> None:
    files = {"GARBAGE": str(certs["garbage"]), "OTHER_KEY": str(certs["other_key"])}
    settings = _secure(certs, **{k: files.get(v, v) if isinstance(v, str) else v for k, v in over.items()})
    with pytest.raises(ConfigError) as err:
        kafka_client_config(settings)
    assert needle in str(err.value) and SECRET not in str(err.value)


def test_topic_replication_settings_are_checked_before_connecting() -> None:
    with pytest.raises(ConfigError, match=re.escape("min_insync_replicas = 2 exceeds kafka.replication_factor = 1")):
        ensure_topics(KafkaSettings(bootstrap="127.0.0.1:1", min_insync_replicas=2), {"t": 1})


def test_refusals_name_what_to_fix() -> None:
    cfg = kafka_client_config(
        KafkaSettings(security_protocol="SASL_PLAINTEXT", username="app", password=SECRET, bootstrap="h:1")
    )
    login = refusal(cfg, "_AUTHENTICATION", "SASL authentication error: invalid credentials")
    assert login and "login of user 'app'" in login and "kafka.password" in login
    assert "not signed by the CA" in (refusal(cfg, "_SSL", "SSL handshake failed: certificate verify failed") or "")
    alert = refusal(cfg, "_TRANSPORT", "Receive failed: SSL routines::ssl/tls alert certificate unknown")
    assert alert and "refused this client's certificate" in alert
    plain = kafka_client_config("h:1")
    hung_up = refusal(plain, "", "Disconnected: connection closed by peer (after 0ms in state APIVERSION_QUERY)")
    assert hung_up and "expects TLS" in hung_up
    assert refusal(plain, "_TRANSPORT", "Connect to ipv4#127.0.0.1:1 failed: Connection refused") is None
    assert all(SECRET not in (m or "") for m in (login, alert, hung_up))


def test_client_log_says_each_repeated_line_once(caplog: pytest.LogCaptureFixture) -> None:
    sink = ClientLog()
    with caplog.at_level(logging.INFO, logger="fusionrec.kafka"):
        for ms in (1, 5, 9):
            sink.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#1", f"x: Disconnected (after {ms}ms in state UP)")
    assert len(caplog.records) == 1 and len(sink.recent) == 3
    assert sink.recent[-1] == "x: Disconnected (after 9ms in state UP)"


def test_passwords_are_secrets_everywhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text(
        '[kafka]\nsecurity_protocol = "sasl_ssl"\nusername = "app"\npassword = 123456789\n'
        '[cassandra]\nusername = "app"\nwrite_consistency = "local_one"\n'
    )
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    monkeypatch.setenv("FUSIONREC_CASSANDRA__PASSWORD", SECRET)
    s = load_settings()
    assert s.kafka.security_protocol == "SASL_SSL"  # names match case-insensitively
    assert isinstance(s.kafka.password, SecretStr) and s.kafka.password.get_secret_value() == "123456789"
    assert s.cassandra.password is not None and s.cassandra.password.get_secret_value() == SECRET
    assert s.cassandra.consistency("write") == "LOCAL_ONE"
    shown = repr(s) + str(s) + s.model_dump_json()
    assert SECRET not in shown and "123456789" not in shown
    again = s.with_overrides(kafka={"topic": "t"})  # flags keep the secrets
    assert again.cassandra.password == s.cassandra.password and again.kafka.password == s.kafka.password


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ('[kafka]\nsecurity_protocol = "TLS"\n', "kafka.security_protocol: Input should be 'PLAINTEXT'"),
        ('[kafka]\nsasl_mechanism = "GSSAPI"\n', "kafka.sasl_mechanism"),
        ('[cassandra]\nwrite_consistency = "SERIAL"\n', "cassandra.write_consistency: Input should be 'ANY'"),
        ('[cassandra]\nread_consistency = "EACH_QUORUM"\n', "cassandra.read_consistency"),
        ('[cassandra]\nread_consistency = "MOST"\n', "cassandra.read_consistency"),
        ("[kafka]\nreplication_factor = 0\n", "kafka.replication_factor"),
    ],
)
def test_bad_names_are_one_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, needle: str
) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text(toml)
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    with pytest.raises(ConfigError) as err:
        load_settings()
    assert needle in str(err.value)


def test_consistency_names_are_the_drivers_and_default_by_replication() -> None:
    assert set(WRITE_CONSISTENCY) | set(READ_CONSISTENCY) <= set(ConsistencyLevel.name_to_value)
    assert CassandraSettings().consistency("write") == CassandraSettings().consistency("read") == "ONE"
    three = CassandraSettings(replication_factor=3)
    assert three.consistency("write") == three.consistency("read") == "LOCAL_QUORUM"
    nts = CassandraSettings(replication_strategy="NetworkTopologyStrategy", datacenters={"dc1": 3, "dc2": 2})
    assert nts.consistency("write") == "ONE"  # the smallest datacenter has no quorum to spare
    assert CassandraSettings(replication_factor=3, read_consistency="ONE").consistency("read") == "ONE"


def test_the_store_uses_the_settings_consistency_and_login() -> None:
    store = open_store(
        "cassandra://h:9042/ks",
        cassandra=CassandraSettings(replication_factor=3, write_consistency="ALL", username="u", password=SECRET),
    )
    assert isinstance(store, CassandraStore)
    assert store._write_cl == ConsistencyLevel.ALL and store._read_cl == ConsistencyLevel.LOCAL_QUORUM
    assert store.access is not None and SECRET not in repr(store.access)
    plain = open_store("cassandra://h:9042/ks")  # no settings: today's behaviour, LOCAL_QUORUM, no login
    assert isinstance(plain, CassandraStore) and plain._write_cl == ConsistencyLevel.LOCAL_QUORUM
    assert plain.access is None
    one = open_store("cassandra://h:9042/ks", cassandra=CassandraSettings())
    assert isinstance(one, CassandraStore) and one._read_cl == one._write_cl == ConsistencyLevel.ONE


def test_cassandra_login_and_tls_from_settings(certs: dict[str, Path]) -> None:
    provider = _login(CassandraSettings(username="u", password=SECRET))
    assert isinstance(provider, PlainTextAuthProvider) and provider.username == "u"
    assert _login(CassandraSettings()) is None and _tls(CassandraSettings()) is None
    with pytest.raises(ConfigError, match=re.escape("cassandra.username and cassandra.password go together")):
        _login(CassandraSettings(username="u"))
    with pytest.raises(ConfigError, match="go together"):
        _login(CassandraSettings(password=SECRET))
    ctx = _tls(
        CassandraSettings(
            ssl_ca_file=str(certs["ca"]), ssl_cert_file=str(certs["client"]), ssl_key_file=str(certs["client_key"])
        )
    )
    assert ctx is not None and ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
    by_ip = _tls(CassandraSettings(ssl_ca_file=str(certs["ca"]), ssl_check_hostname=False))
    assert by_ip is not None and not by_ip.check_hostname and by_ip.verify_mode == ssl.CERT_REQUIRED
    with pytest.raises(ConfigError, match=re.escape("cassandra.ssl_ca_file: /nope.pem: no such file")):
        _tls(CassandraSettings(ssl_ca_file="/nope.pem"))
    with pytest.raises(ConfigError, match="go together"):
        _tls(CassandraSettings(ssl_ca_file=str(certs["ca"]), ssl_cert_file=str(certs["client"])))
    with pytest.raises(ConfigError, match="not a PEM CA certificate"):
        _tls(CassandraSettings(ssl_ca_file=str(certs["garbage"])))


def test_a_refused_connect_is_not_also_logged_as_tracebacks() -> None:
    """`connect` raises the refusal as one line; the driver's own traceback of it is dropped, not others."""

    def record(exc: BaseException) -> logging.LogRecord:
        return logging.LogRecord("cassandra.cluster", logging.WARNING, "f", 1, "Error", None, (type(exc), exc, None))

    quiet = _ConnectTracebacks()
    assert not quiet.filter(record(AuthenticationFailed("Bad credentials")))
    assert not quiet.filter(record(PermissionError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")))
    assert quiet.filter(record(ConnectionRefusedError(111, "Connection refused")))  # a node down: still logged
    assert quiet.filter(logging.LogRecord("cassandra.cluster", logging.INFO, "f", 1, "plain", None, None))


def test_local_certificates(certs: dict[str, Path], tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import pkcs12

    ca = x509.load_pem_x509_certificate(certs["ca"].read_bytes())
    expired = x509.load_pem_x509_certificate(certs["expired"].read_bytes())
    assert expired.not_valid_after_utc < dt.datetime.now(dt.UTC) and expired.issuer == ca.subject
    written = localcerts.write_set(tmp_path / "set", "pw")
    assert {p.name for p in written} >= {"ca.pem", "server.p12", "client.pem", "client.key"}
    server = x509.load_pem_x509_certificate((tmp_path / "set" / "server.pem").read_bytes())
    server.verify_directly_issued_by(x509.load_pem_x509_certificate((tmp_path / "set" / "ca.pem").read_bytes()))
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in names.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    key, cert, chain = pkcs12.load_key_and_certificates((tmp_path / "set" / "server.p12").read_bytes(), b"pw")
    assert key is not None and cert == server and len(chain) == 1
    assert oct((tmp_path / "set" / "client.key").stat().st_mode & 0o777) == "0o600"
    assert localcerts.write_set(tmp_path / "set", "pw") == []  # kept: clients already trust this CA


@pytest.mark.parametrize(
    ("args", "env", "needles"),
    [
        (
            ["replay", "--limit", "1"],
            {"FUSIONREC_KAFKA__SECURITY_PROTOCOL": "SASL_SSL", "FUSIONREC_KAFKA__PASSWORD": SECRET},
            ("needs kafka.username and kafka.password",),
        ),
        (
            ["replay", "--limit", "1"],
            {"FUSIONREC_KAFKA__SECURITY_PROTOCOL": "SSL", "FUSIONREC_KAFKA__SSL_CA_FILE": "/no/ca.pem"},
            ("kafka.ssl_ca_file: /no/ca.pem: no such file",),
        ),
        (
            ["cassandra", "migrate"],
            {"FUSIONREC_CASSANDRA__PASSWORD": SECRET},
            ("cassandra.username and cassandra.password go together",),
        ),
        (["replay"], {"FUSIONREC_CASSANDRA__READ_CONSISTENCY": "SOME"}, ("cassandra.read_consistency",)),
        (["services", "status", "--nodes", "2"], {}, ("--nodes 2",)),
        (["services", "status", "--secure", "--nodes", "3"], {}, ("do not combine",)),
    ],
)
def test_cli_bad_security_settings_are_one_error_line(
    args: list[str], env: dict[str, str], needles: tuple[str, ...]
) -> None:
    proc = run_cli(*args, env=env, timeout=120)
    line = assert_error(proc, *needles)
    assert SECRET not in proc.stdout + proc.stderr, line
