"""sha256 of a model file, remembered on this host while the file stays as it was hashed.

A worker checks every file of its bundle at each start (ranker.bundle, encoders.manifest): about
100 MB for the Scientific bundle, 60 MB of it the text encoder, and the search path's load hashed the
encoder once more. Those are CPU seconds a restart spends before it can serve, on cores it shares
with the brokers. So a digest is kept under the user's cache folder (`$XDG_CACHE_HOME/fusionrec` or
`~/.cache/fusionrec`, as the ranking stage's compiled trees) under a key made of the file's path and
stat identity: device, inode, size, mtime and ctime in nanoseconds. Any write, truncation, rename
over it, chmod or touch changes the ctime, which no unprivileged process can set back (git's index
trusts the same fields). A digest is remembered only for a file whose ctime is at least
`SETTLED_S` old when hashing starts and whose stat did not change while it was hashed, so a file
written in the same clock tick as its last change is hashed again rather than trusted.

Reading or writing the cache never fails a check: an unreadable or malformed entry is a miss, an
unwritable folder means hashing every time."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path

__all__ = ["SETTLED_S", "cache_root", "cached_digest", "digest_cache_folder", "file_digest"]

log = logging.getLogger("fusionrec.encoders")

#: a file changed less than this long ago is hashed but not remembered (coarse file-system clocks)
SETTLED_S = 2.0

_HEX = re.compile(r"[0-9a-f]{64}")


def cache_root() -> Path:
    """fusionrec's folder under the user's cache (the XDG convention): digests here, the ranking
    stage's compiled trees too (ranker.stage_compiled)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "fusionrec"


def digest_cache_folder() -> Path:
    """Where remembered digests are kept."""
    return cache_root() / "digests"


def _fields(st: os.stat_result) -> tuple[int, ...]:
    """What identifies a file's content here (not its atime, which reading it may move)."""
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _identity(path: Path, st: os.stat_result) -> str:
    key = "\0".join([os.path.realpath(path), *map(str, _fields(st))])
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def file_digest(*paths: Path) -> str:
    """sha256 over the files' bytes, in the order given."""
    h = hashlib.sha256()
    for p in paths:
        with p.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def cached_digest(path: Path, cache: Path | None = None, settled_s: float | None = None) -> str:
    """The sha256 of `path`'s bytes: from the cache when the file is unchanged since it was hashed
    here, else hashed (and remembered once settled). OSError from the file itself propagates."""
    folder = cache if cache is not None else digest_cache_folder()
    settled_s = SETTLED_S if settled_s is None else settled_s
    before = path.stat()
    entry = folder / _identity(path, before)
    try:
        known = entry.read_text()
    except (OSError, UnicodeDecodeError):
        known = ""
    if _HEX.fullmatch(known):
        return known
    started = time.time_ns()
    digest = file_digest(path)
    after = path.stat()
    if _fields(after) != _fields(before) or before.st_ctime_ns > started - int(settled_s * 1e9):
        return digest  # changed while hashed, or too recently to trust the clock's tick
    try:
        folder.mkdir(parents=True, exist_ok=True)
        partial = folder / f".{entry.name}.{os.getpid()}.tmp"
        partial.write_text(digest)
        os.replace(partial, entry)  # whole or absent: a reader never sees half a digest
    except OSError as exc:
        log.debug("digest cache %s not writable (%s)", folder, exc)
    return digest
