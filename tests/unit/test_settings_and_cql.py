from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from fusionrec.settings import Settings, load_settings
from schemas.cql import ddl_statements, replication_clause
from schemas.errors import ConfigError
from streams.stores import MemoryStore, SQLiteStore, open_store

REPO = Path(__file__).resolve().parents[2]


def test_defaults_toml_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./fusionrec.toml here
    assert load_settings().kafka.bootstrap == "127.0.0.1:9092"
    cfg = tmp_path / "f.toml"
    cfg.write_text('[kafka]\ntopic = "from-toml"\npartitions = 8\n[worker]\nk = 7\n[serve]\nport = 8100\n')
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    monkeypatch.setenv("FUSIONREC_KAFKA__PARTITIONS", "3")
    s = load_settings()
    assert s.kafka.topic == "from-toml" and s.kafka.partitions == 3 and s.worker.k == 7 and s.serve.port == 8100
    flags = s.with_overrides(serve={"port": 9000, "host": None}, data="shop")
    assert (flags.serve.port, flags.serve.host, flags.data, flags.kafka.topic) == (
        9000,
        "127.0.0.1",
        "shop",
        "from-toml",
    )


def test_example_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_CONFIG", str(REPO / "fusionrec.example.toml"))
    assert load_settings() == Settings.model_validate({})  # the example states every default


def _keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    out = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _keys(field.annotation, f"{prefix}{name}.")
        else:
            out.append(prefix + name)
    return out


def test_every_setting_is_documented_and_read_by_something() -> None:
    example = (REPO / "fusionrec.example.toml").read_text()
    code = "\n".join(
        p.read_text()
        for pkg in ("fusionrec", "streams", "serving", "encoders", "ranker")
        for p in (REPO / pkg).rglob("*.py")
    )  # a field's definition (`name: type = ...`) does not match the patterns below; a use does
    for key in _keys(Settings):
        name = key.rsplit(".", 1)[-1]
        assert re.search(rf"^#? ?({name} =|\[\w+\.{name}\])", example, re.M), f"{key} is not in fusionrec.example.toml"
        assert re.search(rf"\.{name}\b|[\"']{name}[\"']", code), f"{key} is read by nothing"


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[cassandar]\nhosts = ["h"]\n', {}, "cassandar: unknown setting"),
        ("[kafka]\nbootstrapp = 'h:1'\n", {}, "kafka.bootstrapp: unknown setting"),
        ('[kafka]\npartitions = "many"\n', {}, "kafka.partitions: Input should be a valid integer"),
        ("[kafka\n", {}, "not valid TOML"),
        ("", {"FUSIONREC_WORKER__BATCH_SIZE": "lots"}, "worker.batch_size"),
        ("", {"FUSIONREC_CASSANDAR__HOSTS": "h"}, "FUSIONREC_CASSANDAR__HOSTS"),
    ],
)
def test_bad_settings_are_one_error_naming_the_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, env: dict[str, str], message: str
) -> None:
    cfg = tmp_path / "f.toml"
    cfg.write_text(toml)
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_settings()


def test_a_missing_config_file_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match=r"nope\.toml: no such file"):
        load_settings()


def test_ddl_and_replication() -> None:
    stmts = ddl_statements("ks1", replication_clause("SimpleStrategy", 3))
    assert stmts[0].startswith("CREATE KEYSPACE IF NOT EXISTS ks1")
    assert "'replication_factor': 3" in stmts[0]
    assert all("IF NOT EXISTS" in s for s in stmts) and len(stmts) == 4
    assert "'dc1': 3" in replication_clause("NetworkTopologyStrategy", datacenters={"dc1": 3})
    with pytest.raises(ValueError):
        ddl_statements("bad-name; DROP", "{}")


def test_store_urls() -> None:
    assert isinstance(open_store("memory://"), MemoryStore)
    s = open_store("sqlite:///out/x.db")
    assert isinstance(s, SQLiteStore) and s.path == "out/x.db"
    s = open_store("sqlite:////tmp/x.db")
    assert isinstance(s, SQLiteStore) and s.path == "/tmp/x.db"
    c = open_store("cassandra://h1,h2:9043/ks")
    assert (c.hosts, c.port, c.keyspace) == (["h1", "h2"], 9043, "ks")  # type: ignore[attr-defined]
    assert (c.batch_users, c._auto_batch) == (16, True)  # type: ignore[attr-defined]
    tuned = open_store("cassandra://h1:9042/ks?batch_users=8&batch_kib=40")
    assert (tuned.batch_users, tuned.batch_bytes, tuned.keyspace) == (8, 40 * 1024, "ks")  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="integers"):
        open_store("cassandra://h1:9042/ks?batch_kib=lots")
    with pytest.raises(ConfigError):
        open_store("redis://x")


def test_environment_values_follow_the_documented_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Lists and tables as JSON, a field marked TextFromEnv as its own text, names in any case, a
    variable over one key of a TOML section, and a bad value named by its variable."""
    monkeypatch.chdir(tmp_path)
    cfg = tmp_path / "f.toml"
    cfg.write_text('[cassandra]\nkeyspace = "from_toml"\nreplication_factor = 2\n')
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    monkeypatch.setenv("FUSIONREC_CASSANDRA__HOSTS", '["a.example", "b.example"]')
    monkeypatch.setenv("FUSIONREC_CASSANDRA__DATACENTERS", '{"dc1": 3}')
    monkeypatch.setenv("fusionrec_worker__k", "12")
    monkeypatch.setenv("FUSIONREC_SERVE__CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("FUSIONREC_DATA", "shop")
    s = load_settings()
    assert s.cassandra.hosts == ("a.example", "b.example") and s.cassandra.datacenters == {"dc1": 3}
    assert (s.cassandra.keyspace, s.cassandra.replication_factor) == ("from_toml", 2)
    assert s.worker.k == 12 and s.data == "shop"
    assert s.serve.cors_origins == ("https://a.example", "https://b.example")

    monkeypatch.setenv("FUSIONREC_KAFKA", '{"topic": "whole", "partitions": 2}')
    monkeypatch.setenv("FUSIONREC_KAFKA__PARTITIONS", "5")
    s = load_settings()
    assert (s.kafka.topic, s.kafka.partitions) == ("whole", 5)

    monkeypatch.setenv("FUSIONREC_CASSANDRA__HOSTS", "a.example,b.example")
    with pytest.raises(ConfigError, match="FUSIONREC_CASSANDRA__HOSTS: not valid JSON"):
        load_settings()
    monkeypatch.setenv("FUSIONREC_CASSANDRA__HOSTS", '["a.example"]')
    monkeypatch.setenv("FUSIONREC_WORKER__BATCH_SIZ", "5")
    with pytest.raises(ConfigError, match=r"worker\.batch_siz: unknown setting"):
        load_settings()
