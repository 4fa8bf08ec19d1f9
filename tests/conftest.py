"""Shared fixtures. Integration fixtures start the REAL local Kafka and Cassandra (never skipped:
if they cannot start, the tests fail with the service's log tail)."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shopdata.synthetic import generate_shop

REPO = Path(__file__).resolve().parents[1]
SERVICES = REPO / "deploy" / "local" / "services.sh"


#: every `unique` suffix handed out this session: the topics named with them are deleted at its end
_SUFFIXES: list[str] = []


@pytest.fixture(scope="session")
def services() -> Iterator[dict[str, str]]:
    """Kafka + Cassandra up (idempotent: reuses running ones). At the session's end the topics named
    with this session's `unique` suffixes are deleted (and faust's leader topic of each such group):
    a long-lived local broker otherwise fills with thousands of them, and every client's metadata
    request (a worker's start too) carries them all."""
    proc = subprocess.run(["bash", str(SERVICES), "up"], capture_output=True, text=True, timeout=900)
    if proc.returncode != 0:
        pytest.fail(f"local services failed to start:\n{proc.stdout}\n{proc.stderr}")
    found = {
        "bootstrap": f"127.0.0.1:{os.environ.get('FUSIONREC_KAFKA_PORT', '9092')}",
        "cassandra_host": "127.0.0.1",
        "cassandra_port": os.environ.get("FUSIONREC_CASSANDRA_PORT", "9042"),
    }
    yield found
    _drop_session_topics(found["bootstrap"])


def _drop_session_topics(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        names = admin.list_topics(timeout=10).topics
    except Exception as exc:  # the broker went away (a test stopped it): nothing to clean
        print(f"\ntest topics left on {bootstrap}: {exc}")
        return
    ours = [t for t in names if any(s in t for s in _SUFFIXES)]
    for topic, fut in admin.delete_topics(ours, operation_timeout=30).items() if ours else ():
        try:
            fut.result()
        except Exception as exc:  # deleted meanwhile, or the broker refuses: leave it, say so
            print(f"\ntest topic {topic} left: {exc}")


@pytest.fixture
def unique() -> str:
    """A short unique suffix, so every test gets its own topics, group and keyspace."""
    suffix = uuid.uuid4().hex[:10]
    _SUFFIXES.append(suffix)
    return suffix


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
        export_encoder(None, root / variant, variant)
        out[variant] = root / variant
    return out


@pytest.fixture(scope="session")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cheap fp32 export (seconds, not minutes) of a tiny random BERT with the default encoder's
    tokenizer: for tests of how exports are checked, not of what the vectors mean."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from encoders.export import default_model_dir, export_encoder

    root = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(str(default_model_dir()), local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size + 2,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=130,
    )
    BertModel(cfg).eval().save_pretrained(str(root / "src"))
    tok.save_pretrained(str(root / "src"))
    shutil.copy(default_model_dir() / "tokenizer.json", root / "src" / "tokenizer.json")
    export_encoder(root / "src", root / "export", "fp32")
    return root / "export"


VARIANTS = (("weighted-b0.5", "weighted", 0.5), ("gated", "gated", 0.5))
SMALL = {"dim": 32, "layers": 1, "heads": 2, "max_len": 20, "item_dropout": 0.3}  # item_dropout: `train`'s default


def _write_shop(root: Path) -> Path:
    shop = generate_shop(n_users=300, n_items=120)
    root.mkdir(parents=True, exist_ok=True)
    (root / "items.csv").write_text(
        "item_id,title,category,brand\n"
        + "".join(f'{it.item_id},"{it.title}",{it.category},{it.brand}\n' for it in shop.items)
    )
    per_user: dict[str, int] = {}
    lines = []
    for ev in shop.events:
        if ev.item_id is not None:
            lines.append(f"{ev.user_id},{ev.item_id},{ev.ts}\n")
            per_user[ev.user_id] = per_user.get(ev.user_id, 0) + 1
    (root / "events.csv").write_text("user_id,item_id,ts\n" + "".join(lines))
    return root


@pytest.fixture(scope="session")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_shop(tmp_path_factory.mktemp("shop"))


@pytest.fixture(scope="session")
def bundle_models() -> dict[Path, dict[str, Any]]:
    """The trained torch models behind each of `bundles`, by bundle folder and variant name."""
    return {}


@pytest.fixture(scope="session")
def bundles(
    shop_dir: Path,
    exports: dict[str, Path],
    bundle_models: dict[Path, dict[str, Any]],
    tmp_path_factory: pytest.TempPathFactory,
) -> list[Path]:
    from ranker.fit import fit
    from ranker.train import TrainConfig
    from shopdata.loader import load_dataset

    out = []
    for run in range(2):  # same seed twice: determinism
        folder = tmp_path_factory.mktemp(f"bundle{run}")
        fit(
            load_dataset(shop_dir),
            folder,
            exports["int8"],
            variants=VARIANTS,
            model_overrides=SMALL,
            train_cfg=TrainConfig(epochs=4, patience=4, seed=7, batch_size=128),
            progress=False,
            trained_models=bundle_models.setdefault(folder, {}),
        )
        out.append(folder)
    return out


@pytest.fixture(scope="session")
def tiny_bundle(shop_dir: Path, tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cheap real bundle (tiny encoder, one epoch, both variants) for tests of how bundles are
    checked; `bundles` is the one whose numbers mean something."""
    from ranker.fit import fit
    from ranker.train import TrainConfig
    from shopdata.loader import load_dataset

    folder = tmp_path_factory.mktemp("tiny-bundle") / "bundle"
    fit(
        load_dataset(shop_dir),
        folder,
        tiny_encoder,
        variants=VARIANTS,
        model_overrides=SMALL,
        train_cfg=TrainConfig(epochs=1, patience=1, seed=7, batch_size=128),
        progress=False,
    )
    return folder
