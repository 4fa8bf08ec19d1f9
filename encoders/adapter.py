"""A behaviour-tuned text tower: a bottleneck adapter on the encoder's last token states.

    h'_t = h_t + U·gelu(D·h_t + d) + u        for every token t, before the masked mean pooling

Why an adapter, and why on tokens: tuning BERT's top layer on two CPU cores costs minutes per pass
over a catalog; a per-token bottleneck costs ~2% of one layer and can still reweigh what each word
contributes to the item vector (a linear map after pooling cannot). U and u start at zero, so an
untrained adapter is the pretrained encoder exactly. `ranker.tower` trains it (torch) with users'
next items as supervision; `encoders.onnx_build` writes it inside the ONNX graph, so the worker
encodes a new item on the items topic straight into the tuned space. Pure numpy here: the reference
forward pass that the parity tests hold both exports to.
"""

from __future__ import annotations

import hashlib
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from schemas.errors import ConfigError

__all__ = ["ADAPTER_FILE", "AdapterError", "TokenAdapter"]

ADAPTER_FILE = "adapter.npz"
_KEYS = ("down_w", "down_b", "up_w", "up_b")


class AdapterError(ConfigError, ValueError):
    """An adapter file that cannot be used; the message names the file and the reason."""


def _gelu(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf  # exact gelu, as torch's default and the ONNX graph's Erf form

    return np.asarray(0.5 * x * (1.0 + erf(x / math.sqrt(2.0))), dtype=np.float32)


@dataclass(frozen=True, eq=False)
class TokenAdapter:
    """Weights in torch's Linear layout: down_w [rank, dim], down_b [rank], up_w [dim, rank], up_b [dim]."""

    down_w: np.ndarray
    down_b: np.ndarray
    up_w: np.ndarray
    up_b: np.ndarray

    def __post_init__(self) -> None:
        r, d = np.shape(self.down_w)
        shapes = {"down_b": (r,), "up_w": (d, r), "up_b": (d,)}
        for key, shape in shapes.items():
            if np.shape(getattr(self, key)) != shape:
                raise AdapterError(f"adapter {key} has shape {np.shape(getattr(self, key))}, expected {shape}")
        for key in _KEYS:
            if not np.isfinite(getattr(self, key)).all():
                raise AdapterError(f"adapter {key} has non-finite values")

    @property
    def rank(self) -> int:
        return int(self.down_w.shape[0])

    @property
    def dim(self) -> int:
        return int(self.down_w.shape[1])

    @classmethod
    def identity(cls, dim: int, rank: int, seed: int = 0) -> TokenAdapter:
        """Random down-projection, zero up-projection: the pretrained encoder, ready to train."""
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(dim)
        return cls(
            rng.uniform(-bound, bound, (rank, dim)).astype(np.float32),
            np.zeros(rank, np.float32),
            np.zeros((dim, rank), np.float32),
            np.zeros(dim, np.float32),
        )

    def apply(self, hidden: np.ndarray) -> np.ndarray:
        """Token states [..., dim] -> adapted token states (the reference the exports are held to)."""
        h = np.asarray(hidden, dtype=np.float32)
        return h + _gelu(h @ self.down_w.T + self.down_b) @ self.up_w.T + self.up_b

    def digest(self) -> str:
        h = hashlib.sha256()
        for key in _KEYS:
            h.update(np.ascontiguousarray(getattr(self, key), dtype=np.float32).tobytes())
        return h.hexdigest()

    def save(self, path: Path) -> Path:
        arrays = {k: np.asarray(getattr(self, k), np.float32) for k in _KEYS}
        with path.open("wb") as fh:  # a file object: np.savez would append .npz to a name without it
            np.savez(fh, **arrays)  # type: ignore[arg-type]
        return path

    @classmethod
    def load(cls, path: Path) -> TokenAdapter:
        try:
            with np.load(path, allow_pickle=False) as data:
                missing = [k for k in _KEYS if k not in data.files]
                if missing:
                    raise AdapterError(f"{path}: not an adapter file (missing {', '.join(missing)})")
                return cls(*(np.asarray(data[k], np.float32) for k in _KEYS))
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            if isinstance(exc, AdapterError):
                raise
            raise AdapterError(f"{path}: cannot read the adapter ({exc})") from exc
