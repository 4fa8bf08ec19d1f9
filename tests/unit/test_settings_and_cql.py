from __future__ import annotations

from pathlib import Path

import pytest

from fusionrec.settings import Settings
from schemas.cql import ddl_statements, replication_clause
from schemas.errors import ConfigError
from streams.stores import MemoryStore, SQLiteStore, open_store


def test_defaults_toml_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().kafka.bootstrap == "127.0.0.1:9092"
    cfg = tmp_path / "f.toml"
    cfg.write_text('[kafka]\ntopic = "from-toml"\npartitions = 8\n[worker]\nk = 7\n')
    monkeypatch.setenv("FUSIONREC_CONFIG", str(cfg))
    monkeypatch.setenv("FUSIONREC_KAFKA__PARTITIONS", "3")
    s = Settings()
    assert s.kafka.topic == "from-toml" and s.kafka.partitions == 3 and s.worker.k == 7
    monkeypatch.setenv("FUSIONREC_KAFKA__PASSWORD", "hunter2")
    assert "hunter2" not in repr(Settings())


def test_example_config_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FUSIONREC_CONFIG", str(Path(__file__).parents[2] / "fusionrec.example.toml"))
    assert Settings() == Settings.model_validate({})  # the example states every default


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
