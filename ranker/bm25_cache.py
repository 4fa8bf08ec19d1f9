"""The catalog's BM25 index kept between starts, under the user's cache folder
(`$XDG_CACHE_HOME/fusionrec/bm25` or `~/.cache/fusionrec/bm25`).

Why: building it is Python over every item's text (the catalog parsed, each text tokenized and
counted): 0.11 s for Scientific's 4,385 items here, more for a larger shop, all of it holding the
interpreter lock. A worker builds it in the background once it has caught up after a start, and there
it stalled the batches beside it (from a start at 1,000 events/s, a batch took 0.2-1.2 s to rank
instead of 0.04-0.08). Loaded from the cache it is a few milliseconds of numpy.

The key is the caller's (the bundle's digests of its catalog files) plus the digest of the code that
tokenizes and weighs (ranker/text.py, ranker/bm25.py) and the BM25 parameters, so a changed catalog,
tokenizer or formula never reads an old index. The file is written under a temporary name and
renamed (a process killed mid-write leaves no truncated index), and one that cannot be read or does
not fit together is rebuilt and replaced, with one log line. An unwritable cache keeps the index in
memory only.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.digests import cache_root
from ranker import bm25 as bm25_module
from ranker import text as text_module
from ranker.bm25 import BM25Index

__all__ = ["cache_folder", "cached_bm25"]

log = logging.getLogger("fusionrec.search")


def cache_folder() -> Path:
    """Where BM25 indexes are kept between runs (the XDG convention)."""
    return cache_root() / "bm25"


def _code_digest() -> str:
    """The tokenizer's and the index's source: either changing makes every kept index stale."""
    h = hashlib.sha256()
    for module in (text_module, bm25_module):
        h.update(Path(str(module.__file__)).read_bytes())
    return h.hexdigest()[:16]


def cached_bm25(
    key: str, texts: Callable[[], Sequence[str]], k1: float = 1.2, b: float = 0.75, folder: Path | None = None
) -> BM25Index:
    """The BM25 index of the texts that `key` names: from the cache when it holds it, else built from
    `texts()` (called only then) and kept there. `key` must change whenever the texts do."""
    full = hashlib.sha256(f"{key}|{_code_digest()}|k1={k1!r}|b={b!r}".encode()).hexdigest()[:32]
    folder = folder if folder is not None else cache_folder()
    target = folder / f"{full}.npz"
    if target.is_file():
        try:
            with np.load(target, allow_pickle=False) as parts:
                return BM25Index.from_parts(parts)
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            log.warning("bm25_cache_unreadable file=%s error=%s: rebuilt", target, exc)
    index = BM25Index(texts(), k1=k1, b=b)
    _keep(index, folder, target)
    return index


def _keep(index: BM25Index, folder: Path, target: Path) -> None:
    """Writes the index under `target` by way of a temporary name; logs and moves on when it cannot."""
    partial = folder / f".{target.stem}.{os.getpid()}.tmp.npz"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        save: Any = np.savez  # its stub types **arrays as its own keyword flags
        save(partial, **index.parts())
        os.replace(partial, target)
    except OSError as exc:
        log.info("bm25_cache_not_kept folder=%s error=%s", folder, exc)
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
