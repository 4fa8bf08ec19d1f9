"""Encoder fixtures: exports made once per session (offline), the real Scientific item texts, and
the PyTorch reference vectors they are compared against."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shopdata.loader import load_items

REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = [
    os.environ.get("FUSIONREC_SCIENTIFIC_DATA", ""),
    str(REPO.parent / "shared" / "data" / "scientific"),
    "/work/shared/data/scientific",
]  # the workplace's shared folder, for clones made elsewhere
SCIENTIFIC = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "items.csv").is_file()), Path(_CANDIDATES[1]))

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def catalog_texts() -> list[str]:
    items = SCIENTIFIC / "items.csv"
    if not items.is_file():
        pytest.skip(f"real Scientific data not found at {SCIENTIFIC} (set FUSIONREC_SCIENTIFIC_DATA)")
    return [it.text() for it in load_items(items)]


@pytest.fixture(scope="session")
def torch_catalog(catalog_texts: list[str], exports: dict[str, Path]) -> np.ndarray:
    """PyTorch (transformers eager, same pooling and truncation) vectors for the whole catalog."""
    from encoders.export import default_model_dir
    from encoders.manifest import EncoderManifest
    from encoders.torch_reference import TorchEncoder

    max_length = EncoderManifest.read(exports["fp32"]).max_length
    return TorchEncoder(default_model_dir(), max_length).encode(catalog_texts, batch_size=64)
