"""The manifest written beside every exported encoder: what it is, where from, how to feed it, and
the sha256 of every file the runtime reads (model.onnx, tokenizer.json), checked at load."""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from encoders.digests import cached_digest, file_digest
from schemas.errors import ConfigError

__all__ = ["MANIFEST", "EncoderError", "EncoderManifest", "file_digest"]

MANIFEST = "manifest.json"
FORMAT = "fusionrec-text-encoder/1"
REEXPORT = "re-export it with `fusionrec export-encoder`"


class EncoderError(ConfigError, RuntimeError):
    """An encoder cannot run as asked (missing provider, a damaged or altered export); the message
    names the file and what to do."""


#: field -> the types its value must have (json gives int for whole numbers, bool is not an int here)
_TYPES: dict[str, tuple[type, ...]] = {
    "source_model": (str,),
    "source_digest": (str,),
    "model_type": (str,),
    "variant": (str,),
    "opset": (int,),
    "dim": (int,),
    "max_length": (int,),
    "pooling": (str,),
    "normalize": (bool,),
    "pad_token_id": (int,),
    "onnx_file": (str,),
    "onnx_digest": (str,),
    "tokenizer_file": (str,),
    "tokenizer_digest": (str,),
    "inputs": (list,),
    "versions": (dict,),
    "fusions": (dict,),
    "adapter": (dict,),
    "format": (str,),
}


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
    tokenizer_digest: str = ""  # exports made before it was recorded have none: then only model.onnx is checked
    # a behaviour-tuned tower's adapter inside the graph (rank, digest); {}: the pretrained model
    adapter: dict[str, Any] = field(default_factory=dict)
    format: str = FORMAT

    def write(self, folder: Path) -> Path:
        path = folder / MANIFEST
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n")
        return path

    @classmethod
    def read(cls, folder: str | Path) -> EncoderManifest:
        """The manifest of an export; EncoderError naming manifest.json when it is missing, not JSON,
        of another format, or lacks a key (or has one of the wrong type)."""
        path = Path(folder) / MANIFEST
        if not path.is_file():
            raise EncoderError(f"{path} not found: is {folder} an export from `fusionrec export-encoder`?")
        try:
            data: Any = json.loads(path.read_text())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise EncoderError(f"{path} is not valid JSON ({exc}): the export is damaged; {REEXPORT}") from exc
        if not isinstance(data, dict):
            raise EncoderError(f"{path} is not a JSON object: the export is damaged; {REEXPORT}")
        if data.get("format") != FORMAT:
            raise EncoderError(f"{path}: unsupported manifest format {data.get('format')!r} (want {FORMAT})")
        known = {f.name: f for f in fields(cls)}
        missing = [
            n for n, f in known.items() if n not in data and f.default is MISSING and f.default_factory is MISSING
        ]
        if missing:
            raise EncoderError(f"{path} lacks the key(s) {missing}: the export is damaged or incomplete; {REEXPORT}")
        values = {k: v for k, v in data.items() if k in known}  # keys a newer writer adds are left out
        wrong = [
            k
            for k, v in values.items()
            if not isinstance(v, _TYPES[k]) or (isinstance(v, bool) and bool not in _TYPES[k])
        ]
        if wrong:
            raise EncoderError(f"{path}: key(s) {wrong} have the wrong type: the export is damaged; {REEXPORT}")
        for key in ("onnx_file", "tokenizer_file"):
            name = values[key]
            if not name or Path(name).name != name:
                raise EncoderError(f"{path}: {key} {name!r} must be a file name inside the export; {REEXPORT}")
        return cls(**values)

    def verify(self, folder: str | Path) -> tuple[str, str]:
        """(model.onnx sha256, tokenizer.json sha256) after checking both files against this manifest:
        EncoderError naming the file that is missing or does not match its digest."""
        root = Path(folder)
        found = []
        for name, want in ((self.onnx_file, self.onnx_digest), (self.tokenizer_file, self.tokenizer_digest)):
            path = root / name
            if not path.is_file():
                raise EncoderError(f"{path} is missing: the export is incomplete; {REEXPORT}")
            got = cached_digest(path)
            if want and got != want:
                raise EncoderError(
                    f"{path} does not match its digest in {root / MANIFEST}: the export was altered or is "
                    f"incomplete; {REEXPORT}"
                )
            found.append(got)
        return found[0], found[1]

    @property
    def digest(self) -> str:
        """Identity of the encoder for caches: changes when the graph or the tokenizer changes."""
        key = f"{self.onnx_digest}:{self.tokenizer_digest}:{self.variant}:{self.max_length}:{self.tokenizer_file}"
        return hashlib.sha256(key.encode()).hexdigest()[:16]
