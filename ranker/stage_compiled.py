"""The ranking model's trees compiled to machine code (lleaves: LightGBM's text model -> LLVM), so the
worker's per-batch re-rank does not pay LightGBM's per-row predict: measured here on a batch of 300
users (22.5k candidates, 47 trees) 38-44 ms with LightGBM, 7-10 ms compiled, scores equal to 1e-15.

Compiling takes about 1.6 s, so the object is cached per model digest, host CPU and lleaves version
under the user's cache folder (`$XDG_CACHE_HOME/fusionrec` or `~/.cache/fusionrec`): a restarted
worker loads it in milliseconds. The cache is written to a temporary name and renamed, so a worker
killed mid-write never leaves a truncated object for the next one. Any failure (lleaves missing, an
unwritable cache, a compile error) falls back to LightGBM's own predict with one log line: the
scores are the same, only slower.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from encoders.digests import cache_root

__all__ = ["cache_folder", "compiled_predictor"]

log = logging.getLogger("fusionrec.stage")

Predictor = Callable[[np.ndarray], np.ndarray]


def cache_folder() -> Path:
    """Where compiled ranking models are kept between runs (the XDG cache convention)."""
    return cache_root() / "stage"


def compiled_predictor(model_file: Path, threads: int = 1, cache: Path | None = None) -> Predictor | None:
    """A function features [rows, F] -> scores [rows] running the compiled trees, or None (logged)
    when they cannot be compiled here: the caller keeps LightGBM's predict."""
    try:
        import lleaves
        import llvmlite
        import llvmlite.binding as llvm
    except ImportError as exc:  # an install without the compiled path: LightGBM's predict, same scores
        log.info("ranking model: lleaves unavailable (%s); LightGBM predicts", exc)
        return None
    try:
        digest = hashlib.sha256(model_file.read_bytes()).hexdigest()[:20]
        key = f"{digest}-{llvm.get_process_triple()}-{llvm.get_host_cpu_name()}"
        key += f"-lleaves{version('lleaves')}-llvmlite{llvmlite.__version__}"
        folder = cache if cache is not None else cache_folder()
        model: Any = lleaves.Model(model_file=str(model_file))
        target = folder / f"{key}.o"
        if target.is_file():
            model.compile(cache=str(target))
        else:
            _compile_into(model, folder, target)
    except Exception as exc:
        log.warning("ranking model: compiling %s failed (%s); LightGBM predicts", model_file, exc)
        return None

    jobs = threads if threads > 0 else (os.cpu_count() or 1)  # 0: every core, as LightGBM reads it

    def predict(features: np.ndarray) -> np.ndarray:
        if len(features) == 0:
            return np.zeros(0, dtype=np.float64)
        return np.asarray(model.predict(np.ascontiguousarray(features, dtype=np.float64), n_jobs=jobs))

    return predict


def _compile_into(model: Any, folder: Path, target: Path) -> None:
    """Compiles, caching the object under `target` when the folder is writable (else in memory only)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{target.name}.{os.getpid()}.tmp"
        partial.unlink(missing_ok=True)
    except OSError as exc:
        log.info("ranking model: cache %s not writable (%s); compiled in memory", folder, exc)
        model.compile()
        return
    model.compile(cache=str(partial))
    try:
        os.replace(partial, target)
    except OSError as exc:
        log.info("ranking model: could not keep the compiled model in %s (%s)", folder, exc)
        partial.unlink(missing_ok=True)
