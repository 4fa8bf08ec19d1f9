"""TextEncoder: an exported BERT-family encoder run with ONNX Runtime, batched by length.

Composition, not inheritance: a session, a tokenizer and the pooling that lives in the graph.
Texts are sorted by token length and cut into batches, so each batch pads only to its own
longest text; results come back in input order as float32 unit vectors.

Loading checks the export: manifest.json must parse and hold every key, model.onnx and
tokenizer.json must match its digests, and both must load; otherwise an EncoderError (a
ConfigError) names the file. An encode whose vectors are not finite raises one naming model.onnx
instead of handing NaNs on (a graph can load and still compute garbage).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.manifest import REEXPORT, EncoderError, EncoderManifest
from encoders.session import CUDA, ORT_ERRORS, SessionConfig, create_session, model_error
from encoders.tokenize import TextTokenizer
from schemas.progress import progress as progress_bar

__all__ = ["TextEncoder", "graph_advice"]

log = logging.getLogger("fusionrec.encoders")


def graph_advice(on_cuda: bool, variant: str, fusions: dict[str, int]) -> str | None:
    """A warning for an export that runs slowly where its session landed, else None."""
    if not on_cuda and fusions.get("SkipLayerNormalization"):
        # exports made for CUDA, or by fusionrec before the CPU variants dropped it
        return (
            "slow_cpu_graph: SkipLayerNormalization runs 3-6x slower on CPU than Add + LayerNormalization; "
            "re-export with `fusionrec export-encoder --variant fp32|int8`"
        )
    if on_cuda and variant == "int8":
        # dynamic quantisation has few CUDA kernels: an H200 encoded 1,500-1,800 texts/s with it (batch 64)
        # against 14,000-18,000 with fp32 (bench/encoders.py, batch 32-128)
        return (
            "slow_cuda_graph: an int8 export runs on CUDA at about a tenth of fp32's speed; for a GPU, "
            "re-export with `fusionrec export-encoder --variant fp32` (or fp16 for batches of 128 and more)"
        )
    return None


class TextEncoder:
    def __init__(self, folder: str | Path, session: SessionConfig = SessionConfig()) -> None:
        self.folder = Path(folder)
        self.manifest = EncoderManifest.read(self.folder)
        #: sha256 of model.onnx and tokenizer.json as checked against the manifest: what caches key on
        self.weights_digest, self.tokenizer_digest = self.manifest.verify(self.folder)
        self.model_path = self.folder / self.manifest.onnx_file
        self.session = create_session(self.model_path, session)
        tokenizer_path = self.folder / self.manifest.tokenizer_file
        try:
            self.tokenizer = TextTokenizer(tokenizer_path, self.manifest.max_length, self.manifest.pad_token_id)
        except Exception as exc:  # the tokenizers library raises a bare Exception on a bad file
            raise EncoderError(
                f"{tokenizer_path} is not a loadable tokenizer ({exc}): the export is damaged; {REEXPORT}"
            ) from exc
        self.input_names = [i.name for i in self.session.get_inputs()]  # feed only what the graph declares
        self.output_name = self.session.get_outputs()[0].name
        self.on_cuda = self.session.get_providers()[0] == CUDA
        self.dim = self.manifest.dim
        advice = graph_advice(self.on_cuda, self.manifest.variant, self.manifest.fusions)
        if advice:
            log.warning("%s folder=%s variant=%s", advice, self.folder, self.manifest.variant)

    @property
    def cache_key(self) -> dict[str, str | int]:
        """What vectors made by this encoder depend on: a cache made with another key is stale."""
        return {
            "encoder_digest": self.weights_digest,
            "encoder_variant": self.manifest.variant,
            "tokenizer_digest": self.tokenizer_digest,
            "max_length": self.manifest.max_length,
        }

    @property
    def providers(self) -> list[str]:
        return list(self.session.get_providers())

    def encode(
        self, texts: Sequence[str], batch_size: int = 64, progress: bool = False, desc: str = "encode"
    ) -> np.ndarray:
        """[len(texts), dim] float32 unit vectors, in input order."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        encoded = self.tokenizer.encode(texts)
        order = np.argsort([len(ids) for ids, _ in encoded], kind="stable")
        with progress_bar(total=len(texts), unit="text", desc=desc, enabled=progress) as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                feed = self.tokenizer.pad([encoded[i] for i in idx])
                vectors = self._run({k: v for k, v in feed.items() if k in self.input_names})
                if vectors.shape != (len(idx), self.dim):
                    raise EncoderError(
                        f"{self.model_path} returned vectors of shape {vectors.shape[1:]}, its manifest says "
                        f"({self.dim},): the export is inconsistent; {REEXPORT}"
                    )
                if not np.isfinite(vectors).all():
                    raise EncoderError(
                        f"{self.model_path} produced non-finite vectors (NaN or inf): the model is damaged; {REEXPORT}"
                    )
                out[idx] = vectors
                bar.update(len(idx))
        return out

    def _run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        try:
            return self._run_session(feed)
        except ORT_ERRORS as exc:
            raise model_error(self.model_path, exc, "run") from exc

    def _run_session(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if not self.on_cuda:
            return np.asarray(self.session.run([self.output_name], feed)[0], dtype=np.float32)
        # IO binding: inputs copied to the GPU once, the output allocated there and read back once
        binding: Any = self.session.io_binding()
        for name, array in feed.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        binding.bind_output(self.output_name, "cuda")
        self.session.run_with_iobinding(binding)
        return np.asarray(binding.copy_outputs_to_cpu()[0], dtype=np.float32)
