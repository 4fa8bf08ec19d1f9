"""ranker.bm25_cache: the catalog's BM25 index is built once and read back on the next start; a
changed key or parameter builds anew; an unreadable file is rebuilt with one log line; an
unwritable cache still gives the index."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ranker.bm25 import BM25Index
from ranker.bm25_cache import cached_bm25

TEXTS = ["red shoe", "red red hat", "blue shoe shoe shoe", "Hat-rack 9.25"]


def _same(a: BM25Index, b: BM25Index) -> bool:
    return (
        a.vocab == b.vocab
        and a.n_docs == b.n_docs
        and all(np.array_equal(getattr(a, n), getattr(b, n)) for n in ("indptr", "indices", "data"))
    )


def _never() -> list[str]:
    raise AssertionError("the texts were asked for: the cache was not used")


def test_built_once_then_read_back(tmp_path: Path) -> None:
    calls: list[int] = []

    def texts() -> list[str]:
        calls.append(1)
        return TEXTS

    built = cached_bm25("catalog-a", texts, folder=tmp_path)
    assert calls == [1] and _same(built, BM25Index(TEXTS))
    assert len(list(tmp_path.glob("*.npz"))) == 1 and not list(tmp_path.glob(".*"))  # no temporary left
    again = cached_bm25("catalog-a", _never, folder=tmp_path)
    assert _same(again, built)
    assert np.array_equal(again.scores("red hat"), built.scores("red hat"))


def test_another_key_or_parameter_builds_anew(tmp_path: Path) -> None:
    cached_bm25("catalog-a", lambda: TEXTS, folder=tmp_path)
    other = cached_bm25("catalog-b", lambda: TEXTS[:2], folder=tmp_path)
    assert other.n_docs == 2
    k1 = cached_bm25("catalog-a", lambda: TEXTS, k1=2.0, folder=tmp_path)
    assert _same(k1, BM25Index(TEXTS, k1=2.0)) and not _same(k1, BM25Index(TEXTS))
    assert len(list(tmp_path.glob("*.npz"))) == 3


@pytest.mark.parametrize("damage", ["truncated", "not a zip", "wrong arrays"])
def test_an_unreadable_file_is_rebuilt_and_replaced(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    cached_bm25("catalog-a", lambda: TEXTS, folder=tmp_path)
    (kept,) = tmp_path.glob("*.npz")
    if damage == "truncated":
        kept.write_bytes(kept.read_bytes()[:200])
    elif damage == "not a zip":
        kept.write_text("hello")
    else:
        parts = BM25Index(TEXTS).parts()
        np.savez(kept, terms=parts["terms"], indptr=parts["indptr"][:-1], indices=parts["indices"],
                 data=parts["data"], n_docs=parts["n_docs"])  # fmt: skip
    with caplog.at_level("WARNING", logger="fusionrec.search"):
        rebuilt = cached_bm25("catalog-a", lambda: TEXTS, folder=tmp_path)
    assert _same(rebuilt, BM25Index(TEXTS))
    assert caplog.text.count("bm25_cache_unreadable") == 1
    assert _same(cached_bm25("catalog-a", _never, folder=tmp_path), rebuilt)  # the file was replaced


def test_an_unwritable_cache_still_gives_the_index(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder would be")
    with caplog.at_level("INFO", logger="fusionrec.search"):
        index = cached_bm25("catalog-a", lambda: TEXTS, folder=blocked / "bm25")
    assert _same(index, BM25Index(TEXTS))
    assert "bm25_cache_not_kept" in caplog.text


def test_the_default_folder_follows_xdg_cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cached_bm25("catalog-a", lambda: TEXTS)
    assert len(list((tmp_path / "xdg" / "fusionrec" / "bm25").glob("*.npz"))) == 1
