"""The manifest written beside every exported encoder: what it is, where from, how to feed it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["MANIFEST", "EncoderManifest", "file_digest"]

MANIFEST = "manifest.json"
FORMAT = "fusionrec-text-encoder/1"


def file_digest(*paths: Path) -> str:
    """sha256 over the files' bytes, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class EncoderManifest:
    source_model: str
    source_digest: str
    model_type: str
    variant: str  # fp32 | int8 | fp16
    opset: int
    dim: int
    max_length: int
    pooling: str
    normalize: bool
    pad_token_id: int
    onnx_file: str
    onnx_digest: str
    tokenizer_file: str
    inputs: list[str]
    versions: dict[str, str] = field(default_factory=dict)
    fusions: dict[str, int] = field(default_factory=dict)
    format: str = FORMAT

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> EncoderManifest:
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: is {folder} an export from `fusionrec export-encoder`?")
        data: dict[str, Any] = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"{path}: unsupported manifest format {data.get('format')!r} (want {FORMAT})")
        return cls(**data)

    @property
    def digest(self) -> str:
        """Identity of the encoder for caches: changes when the graph or the tokenizer changes."""
        return hashlib.sha256(f"{self.onnx_digest}:{self.max_length}:{self.tokenizer_file}".encode()).hexdigest()[:16]
