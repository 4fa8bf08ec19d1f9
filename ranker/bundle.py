"""The model bundle: a versioned folder workers and the API load, with no torch.

  manifest.json      format, version, fusion, α, β, decay, dims, file digests, validation metrics
  user_encoder.onnx  item_vectors [B, L, D] + mask [B, L] + event_types [B, L] -> user vector
  item_vectors.npy   fused item vectors g_j [n_items, D] (row r = item_ids[r])
  item_ids.json, item_categories.npy (category index per item row), category_names.json
  variants/<name>/   the other fusion strategies, same layout, scored beside the main model
Every file's sha256 is checked at load; every stored list names `version`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from encoders.manifest import file_digest
from encoders.sequence import SequenceEncoder
from encoders.session import SessionConfig

__all__ = ["BUNDLE_FORMAT", "ModelBundle", "bundle_version", "write_manifest"]

BUNDLE_FORMAT = "fusionrec-model-bundle/1"
FILES = (
    "user_encoder.onnx",
    "item_vectors.npy",
    "item_ids.json",
    "item_categories.npy",
    "category_names.json",
)


def bundle_version(folder: Path) -> str:
    h = hashlib.sha256()
    for name in FILES:
        h.update(file_digest(folder / name).encode())
    return "fr-" + h.hexdigest()[:12]


def write_manifest(folder: Path, info: dict[str, Any]) -> dict[str, Any]:
    manifest = {
        "format": BUNDLE_FORMAT,
        "version": bundle_version(folder),
        "files": {name: file_digest(folder / name) for name in FILES},
        **info,
    }
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


@dataclass
class ModelBundle:
    folder: Path
    manifest: dict[str, Any]
    item_ids: list[str]
    item_vectors: np.ndarray
    item_categories: np.ndarray
    category_names: list[str]
    encoder: SequenceEncoder

    @property
    def version(self) -> str:
        return str(self.manifest["version"])

    @classmethod
    def load(cls, folder: str | Path, session: SessionConfig = SessionConfig(), verify: bool = True) -> ModelBundle:
        root = Path(folder)
        path = root / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {root} a bundle from `fusionrec train`?")
        manifest = json.loads(path.read_text())
        if manifest.get("format") != BUNDLE_FORMAT:
            raise ValueError(f"{path}: unsupported bundle format {manifest.get('format')!r}")
        if verify:
            for name, digest in manifest["files"].items():
                if file_digest(root / name) != digest:
                    raise ValueError(f"{root / name} does not match its manifest digest: the bundle was altered")
        ids = json.loads((root / "item_ids.json").read_text())
        vectors = np.load(root / "item_vectors.npy")
        return cls(
            folder=root,
            manifest=manifest,
            item_ids=ids,
            item_vectors=vectors,
            item_categories=np.load(root / "item_categories.npy"),
            category_names=json.loads((root / "category_names.json").read_text()),
            encoder=SequenceEncoder(root / "user_encoder.onnx", session, max_length=int(manifest["model"]["max_len"])),
        )

    def item_fusion(self) -> tuple[Any, Any]:
        """(text encoder, item-fusion session) for live items; raises when the bundle predates them."""
        from encoders.session import create_session
        from encoders.text import TextEncoder

        if not (self.folder / "item_fusion.onnx").is_file() or not (self.folder / "encoder").is_dir():
            raise FileNotFoundError(f"{self.folder} has no item_fusion.onnx/encoder: retrain to serve live items")
        return TextEncoder(self.folder / "encoder"), create_session(self.folder / "item_fusion.onnx")

    def variants(self) -> dict[str, ModelBundle]:
        root = self.folder / "variants"
        if not root.is_dir():
            return {}
        return {p.name: ModelBundle.load(p, verify=False) for p in sorted(root.iterdir()) if p.is_dir()}

    def user_vectors(
        self,
        histories: Sequence[Sequence[int]],
        types: Sequence[Sequence[int]] | None = None,
        batch_size: int = 512,
    ) -> np.ndarray:
        """User vectors for histories of item ROWS (0-based into item_vectors), oldest first."""
        return self.encoder.encode_rows(self.item_vectors, histories, types, batch_size=batch_size)

    def scores(self, histories: Sequence[Sequence[int]], types: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        return self.user_vectors(histories, types) @ self.item_vectors.T
