"""Encoder fixtures: exports made once per session (offline) by each builder, the real Scientific
item texts, and the PyTorch reference vectors they are compared against.

`exports` is overridden here, parametrised over the builder: every encoder test that takes it runs
against the numpy export (encoders.onnx_build, the runtime install's; it reuses the suite-wide
`exports`, which the default backend "auto" makes with numpy) and against the torch export
(encoders.bert_graph traced), each with its fp32, int8 and fp16 variants.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from encoders.manifest import EncoderManifest
from shopdata.loader import load_items

REPO = Path(__file__).resolve().parents[2]
_CANDIDATES = [
    os.environ.get("FUSIONREC_SCIENTIFIC_DATA", ""),
    str(REPO.parent / "shared" / "data" / "scientific"),
    "/work/shared/data/scientific",
]  # the workplace's shared folder, for clones made elsewhere
SCIENTIFIC = next((Path(c) for c in _CANDIDATES if c and (Path(c) / "items.csv").is_file()), Path(_CANDIDATES[1]))
BACKENDS = ("numpy", "torch")
VARIANTS = ("fp32", "int8", "fp16")

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def export_all(root: Path, backend: str) -> dict[str, Path]:
    """Every variant of the default encoder, exported by `backend` under root/<variant>."""
    from encoders.export import export_encoder

    for variant in VARIANTS:
        export_encoder(None, root / variant, variant, backend=backend)  # type: ignore[arg-type]
    return {v: root / v for v in VARIANTS}


@pytest.fixture(scope="session")
def torch_exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return export_all(tmp_path_factory.mktemp("encoders-torch"), "torch")


@pytest.fixture(scope="session", params=BACKENDS)
def exports(
    request: pytest.FixtureRequest, exports: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """{variant: export folder} by the builder this run is parametrised with (the test id says which)."""
    if request.param == "torch":
        found: dict[str, Path] = request.getfixturevalue("torch_exports")
        return found
    if all(EncoderManifest.read(f).versions.get("exporter") == "numpy" for f in exports.values()):
        return exports  # the suite-wide exports, made by "auto" = numpy
    return export_all(tmp_path_factory.mktemp("encoders-numpy"), "numpy")


@pytest.fixture(scope="session")
def catalog_texts() -> list[str]:
    items = SCIENTIFIC / "items.csv"
    if not items.is_file():
        pytest.skip(f"real Scientific data not found at {SCIENTIFIC} (set FUSIONREC_SCIENTIFIC_DATA)")
    return [it.text() for it in load_items(items)]


@pytest.fixture(scope="session")
def torch_catalog(catalog_texts: list[str]) -> np.ndarray:
    """PyTorch (transformers eager, same pooling and truncation) vectors for the whole catalog: one
    encode for both builders' exports (it does not depend on them)."""
    from encoders.export import default_model_dir, max_length_of
    from encoders.torch_reference import TorchEncoder

    src = default_model_dir()
    return TorchEncoder(src, max_length_of(src)).encode(catalog_texts, batch_size=64)
