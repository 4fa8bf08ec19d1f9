"""The local secure services (deploy/local/secure.sh: SASL_SSL Kafka with client certificates, Cassandra
with a password and TLS), started once per session and stopped at its end (left running when they
already were), and what the tests need to use or break them: settings, certificates, every secret."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from streams.settings import CassandraSettings, KafkaSettings

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "deploy" / "local" / "secure.sh"
HOME = Path(os.environ.get("FUSIONREC_SECURE_HOME", REPO / ".local" / "secure"))
TOML = Path(os.environ.get("FUSIONREC_SECURE_TOML", REPO / "fusionrec.secure.toml"))


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string for these plain values


@dataclass(frozen=True)
class Secure:
    toml: Path
    config: dict[str, dict[str, Any]]
    certs: Path
    secrets: tuple[str, ...]  # every password the services know; none may ever be printed

    @property
    def kafka(self) -> KafkaSettings:
        return KafkaSettings.model_validate(self.config["kafka"])

    @property
    def cassandra(self) -> CassandraSettings:
        return CassandraSettings.model_validate(self.config["cassandra"])

    def variant(self, path: Path, section: str, replace: bool = False, **values: Any) -> Path:
        """A copy of the secure settings file with `section` changed (`replace`: only `values` in it)."""
        config = {k: dict(v) for k, v in self.config.items()}
        config[section] = dict(values) if replace else {**config[section], **values}
        config[section] = {k: v for k, v in config[section].items() if v is not None}
        path.write_text(
            "".join(
                f"[{name}]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in body.items()) + "\n"
                for name, body in config.items()
            )
        )
        return path

    def assert_no_secret(self, *texts: str, extra: Iterable[str] = ()) -> None:
        for secret in (*self.secrets, *extra):
            for text in texts:
                assert secret not in text, "a password was printed or logged"


def _wait_for_group_coordinator(kafka: KafkaSettings, timeout_s: float = 60) -> None:
    """A broker's first group request creates __consumer_offsets; until its leaders settle, reading a
    group's offsets (bench.harness.GroupOffsets) fails with NOT_COORDINATOR instead of waiting."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    from streams.kafka_config import confluent_config

    consumer = Consumer(confluent_config(kafka, {"group.id": "fusionrec-tests-warmup"}))
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                consumer.committed([TopicPartition("warmup", 0)], timeout=5)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


@pytest.fixture(scope="session")
def secure() -> Iterator[Secure]:
    env = {**os.environ, "FUSIONREC_PYTHON": sys.executable}
    was_up = subprocess.run(["bash", str(SCRIPT), "status"], capture_output=True, env=env).returncode == 0
    proc = subprocess.run(["bash", str(SCRIPT), "up"], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"the secure services failed to start:\n{proc.stdout}\n{proc.stderr}")
    secrets = tuple(line.split("=", 1)[1] for line in (HOME / "secrets.env").read_text().splitlines() if "=" in line)
    assert len(secrets) == 5 and all(len(s) >= 32 for s in secrets)
    services = Secure(TOML, tomllib.loads(TOML.read_text()), HOME / "certs", secrets)
    _wait_for_group_coordinator(services.kafka)
    yield services
    if not was_up:
        subprocess.run(["bash", str(SCRIPT), "down"], capture_output=True, env=env, timeout=300)


@pytest.fixture(scope="session")
def bad_certs(secure: Secure, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A CA nobody trusts (self-signed), and a client certificate of the services' own CA that has expired."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from fusionrec import localcerts

    root = tmp_path_factory.mktemp("bad-certs")
    localcerts.write_pem(localcerts.make_ca("not the services' CA"), root / "other-ca.pem")
    key = serialization.load_pem_private_key((secure.certs / "ca.key").read_bytes(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    ca = localcerts.Issued(key, x509.load_pem_x509_certificate((secure.certs / "ca.pem").read_bytes()))
    now = dt.datetime.now(dt.UTC)
    expired = localcerts.issue(
        ca, "expired-client", server=False, not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1)
    )
    localcerts.write_pem(expired, root / "expired.pem", root / "expired.key")
    return {"other_ca": root / "other-ca.pem", "expired": root / "expired.pem", "expired_key": root / "expired.key"}
