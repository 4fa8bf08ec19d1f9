"""A remembered digest is used only while the file is the one that was hashed: any change to it is
hashed again, a file changed too recently is not remembered, and a broken cache never fails a check."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

import encoders.digests as digests
from encoders import EncoderError, TextEncoder
from encoders.digests import cached_digest


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _no_hashing(path: Path) -> str:
    raise AssertionError(f"{path} was read again")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.onnx"
    path.write_bytes(os.urandom(3 << 20))
    return path


def test_a_settled_file_is_hashed_once_then_answered_from_the_cache(
    model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    assert cached_digest(model, cache, settled_s=0) == _sha(model)
    assert len(list(cache.iterdir())) == 1
    monkeypatch.setattr(digests, "file_digest", _no_hashing)
    assert cached_digest(model, cache, settled_s=0) == _sha(model)


def test_a_file_changed_in_place_is_hashed_again(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = cached_digest(model, cache, settled_s=0)
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    with model.open("r+b") as fh:  # same size, same inode, one byte
        fh.write(data)
    os.utime(model, ns=(model.stat().st_atime_ns, model.stat().st_mtime_ns - 10**9))  # even with mtime set back
    assert cached_digest(model, cache, settled_s=0) == _sha(model) != first


def test_a_file_replaced_by_a_copy_of_the_same_size_is_hashed_again(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cached_digest(model, cache, settled_s=0)
    other = tmp_path / "other.onnx"
    other.write_bytes(os.urandom(model.stat().st_size))
    shutil.copystat(model, other)
    os.replace(other, model)
    assert cached_digest(model, cache, settled_s=0) == _sha(model)


def test_a_recently_changed_file_is_not_remembered(model: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    assert cached_digest(model, cache, settled_s=3600) == _sha(model)
    assert not cache.exists() or not list(cache.iterdir())


def test_an_unwritable_or_damaged_cache_never_fails_a_check(model: Path, tmp_path: Path) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    assert cached_digest(model, blocked, settled_s=0) == _sha(model)
    cache = tmp_path / "cache"
    cached_digest(model, cache, settled_s=0)
    (entry,) = cache.iterdir()
    entry.write_text("half a dig")
    assert cached_digest(model, cache, settled_s=0) == _sha(model)


def test_an_export_altered_after_its_digests_were_remembered_is_refused(
    tiny_encoder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check at load goes through the cache: a remembered export that is then altered is refused
    by name, as one never loaded before is."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(digests, "SETTLED_S", 0.0)
    export = Path(shutil.copytree(tiny_encoder, tmp_path / "export"))
    TextEncoder(export)
    assert list((tmp_path / "xdg" / "fusionrec" / "digests").iterdir())
    weights = export / "model.onnx"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(EncoderError, match=f"{weights} does not match its digest"):
        TextEncoder(export)
