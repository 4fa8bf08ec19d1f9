"""Shared fixtures. Integration fixtures start the REAL local Kafka and Cassandra (never skipped:
if they cannot start, the tests fail with the service's log tail)."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "deploy" / "local" / "services.sh"


@pytest.fixture(scope="session")
def services() -> dict[str, str]:
    """Kafka + Cassandra up (idempotent: reuses running ones)."""
    proc = subprocess.run(["bash", str(SERVICES), "up"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"local services failed to start:\n{proc.stdout}\n{proc.stderr}")
    return {
        "bootstrap": f"127.0.0.1:{os.environ.get('FUSIONREC_KAFKA_PORT', '9092')}",
        "cassandra_host": "127.0.0.1",
        "cassandra_port": os.environ.get("FUSIONREC_CASSANDRA_PORT", "9042"),
    }


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so every test gets its own topics, group and keyspace."""
    return uuid.uuid4().hex[:10]


@pytest.fixture
def cassandra_keyspace(services: dict[str, str], unique: str) -> Iterator[str]:
    ks = f"t_{unique}"
    yield ks
    from streams.stores.cassandra import connect

    cluster, session = connect([services["cassandra_host"]], int(services["cassandra_port"]))
    try:
        session.execute(f"DROP KEYSPACE IF EXISTS {ks}", timeout=60)
    finally:
        cluster.shutdown()


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32, int8 and fp16 exports of the default encoder, made once per session, offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from encoders.export import export_encoder

    root = tmp_path_factory.mktemp("encoders")
    out = {}
    for variant in ("fp32", "int8", "fp16"):
        export_encoder(None, root / variant, variant)  # type: ignore[arg-type]
        out[variant] = root / variant
    return out
