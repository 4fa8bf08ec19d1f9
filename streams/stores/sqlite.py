"""SQLite store for embedded mode: one file, WAL, upserts in one transaction per batch.

Implements every port (state, lists, results, catalog tags, dead letters): embedded mode has no
other place to keep them. Opened with `create=False` (readers: `recommend`, `serve`) it never
creates the file, its folder or its tables, so a mistyped path is an error, not an empty store.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path

import orjson

from ranker.state import UserState, state_from_dict, state_to_dict
from schemas.codec import decode_recommendations, encode_recommendations
from schemas.errors import ConfigError, StoreUnavailable
from schemas.recommendations import RecommendationList
from streams.stores.base import DeadLetterRecord

__all__ = ["SQLiteStore"]

_DDL = [
    "CREATE TABLE IF NOT EXISTS user_state (user_id TEXT PRIMARY KEY, state BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS recommendations (user_id TEXT PRIMARY KEY, payload BLOB NOT NULL)",
    "CREATE TABLE IF NOT EXISTS item_tags (item_id TEXT PRIMARY KEY, payload BLOB NOT NULL, model TEXT)",
    "CREATE TABLE IF NOT EXISTS dead_letters (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT, "
    "offset INTEGER, field TEXT, reason TEXT, raw BLOB, UNIQUE(source, offset))",
]
_TABLES = ("user_state", "recommendations", "item_tags", "dead_letters")  # what `create=False` expects


class SQLiteStore:
    def __init__(self, path: str | Path, url: str | None = None, *, create: bool = True) -> None:
        """`create=False`: `setup` opens an existing store only (ConfigError otherwise)."""
        self.path = str(path)
        self.url = url or f"sqlite:///{self.path}"
        self.create = create
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def setup(self) -> None:
        if self._conn is not None:
            return
        if not self.create and self.path != ":memory:":
            self._conn = self._open_existing()
            return
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            for stmt in _DDL:
                conn.execute(stmt)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
        self._conn = conn

    def _open_existing(self) -> sqlite3.Connection:
        """The store's file as it is: `mode=rw` makes SQLite refuse to create it (race-free, unlike
        a check then an open); no mkdir, no DDL, no journal-mode change (WAL is kept in the file)."""
        path = Path(self.path)
        if not path.is_file():
            raise ConfigError(
                f"no SQLite store at {self.path}: the file does not exist; check the path, or fill a store "
                "first (`fusionrec demo --db PATH`)"
            )
        uri = f"{path.absolute().as_uri()}?mode=rw"
        try:
            conn = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        except sqlite3.Error as exc:
            raise ConfigError(f"no SQLite store at {self.path}: {exc}") from exc
        try:
            conn.execute("PRAGMA synchronous=NORMAL")
            found = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            missing = [t for t in _TABLES if t not in found]
            if missing:
                raise ConfigError(
                    f"no SQLite store at {self.path}: the file lacks table(s) {', '.join(missing)}; "
                    "is it a fusionrec store?"
                )
        except sqlite3.OperationalError as exc:  # locked, I/O error: may pass
            conn.close()
            raise StoreUnavailable(f"cannot open SQLite store {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:  # "file is not a database"
            conn.close()
            raise ConfigError(f"no SQLite store at {self.path}: {exc}") from exc
        except ConfigError:
            conn.close()
            raise
        return conn

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is None:
            self.setup()
        assert self._conn is not None
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _write(self, sql: str, rows: list[tuple[object, ...]]) -> None:
        if not rows:
            return
        with self._lock:
            try:
                self.conn.execute("BEGIN")
                self.conn.executemany(sql, rows)
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.conn.execute("ROLLBACK") if self.conn.in_transaction else None
                raise StoreUnavailable(f"SQLite write failed: {exc}") from exc

    def get_states(self, user_ids: Sequence[str]) -> dict[str, UserState]:
        out: dict[str, UserState] = {}
        ids = list(dict.fromkeys(user_ids))
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                rows = self.conn.execute(
                    f"SELECT user_id, state FROM user_state WHERE user_id IN ({marks})", chunk
                ).fetchall()
                for user_id, blob in rows:
                    out[user_id] = state_from_dict(orjson.loads(blob))
        return out

    def put_states(self, states: Sequence[UserState]) -> None:
        self._write(
            "INSERT OR REPLACE INTO user_state (user_id, state) VALUES (?, ?)",
            [(s.user_id, orjson.dumps(state_to_dict(s))) for s in states],
        )

    def put_recommendations(self, lists: Sequence[RecommendationList]) -> None:
        self._write(
            "INSERT OR REPLACE INTO recommendations (user_id, payload) VALUES (?, ?)",
            [(r.user_id, encode_recommendations(r)) for r in lists],
        )

    def put_results(self, lists: Sequence[RecommendationList], states: Sequence[UserState]) -> None:
        if not lists and not states:
            return
        with self._lock:
            try:
                self.conn.execute("BEGIN")
                self.conn.executemany(
                    "INSERT OR REPLACE INTO recommendations (user_id, payload) VALUES (?, ?)",
                    [(r.user_id, encode_recommendations(r)) for r in lists],
                )
                self.conn.executemany(
                    "INSERT OR REPLACE INTO user_state (user_id, state) VALUES (?, ?)",
                    [(s.user_id, orjson.dumps(state_to_dict(s))) for s in states],
                )
                self.conn.execute("COMMIT")
            except sqlite3.OperationalError as exc:
                self.conn.execute("ROLLBACK") if self.conn.in_transaction else None
                raise StoreUnavailable(f"SQLite write failed: {exc}") from exc

    def get_recommendations(self, user_id: str) -> RecommendationList | None:
        with self._lock:
            row = self.conn.execute("SELECT payload FROM recommendations WHERE user_id = ?", (user_id,)).fetchone()
        return decode_recommendations(row[0]) if row else None

    def all_states(self) -> dict[str, UserState]:
        """Every stored state (a full scan: for verification and tests, not the hot path)."""
        with self._lock:
            rows = self.conn.execute("SELECT user_id, state FROM user_state").fetchall()
        return {u: state_from_dict(orjson.loads(b)) for u, b in rows}

    def count_states(self) -> int:
        with self._lock:
            return int(self.conn.execute("SELECT COUNT(*) FROM user_state").fetchone()[0])

    def put_item_tags(self, tags: Mapping[str, Sequence[tuple[str, float]]], model: str) -> None:
        self._write(
            "INSERT OR REPLACE INTO item_tags (item_id, payload, model) VALUES (?, ?, ?)",
            [(i, orjson.dumps([[t, float(v)] for t, v in pairs]), model) for i, pairs in tags.items()],
        )

    def get_item_tags(self, item_ids: Sequence[str]) -> dict[str, list[tuple[str, float]]]:
        out: dict[str, list[tuple[str, float]]] = {}
        ids = list(dict.fromkeys(item_ids))
        with self._lock:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ",".join("?" * len(chunk))
                for item_id, blob in self.conn.execute(
                    f"SELECT item_id, payload FROM item_tags WHERE item_id IN ({marks})", chunk
                ):
                    out[item_id] = [(str(t), float(v)) for t, v in orjson.loads(blob)]
        return out

    # Embedded mode's dead-letter "topic": a table with the same fields as the Kafka headers.
    def put_dead_letters(self, records: Sequence[DeadLetterRecord]) -> None:
        self._write(
            "INSERT OR IGNORE INTO dead_letters (source, offset, field, reason, raw) VALUES (?, ?, ?, ?, ?)",
            [(d.source, d.offset, d.field, d.reason, d.raw) for d in records],
        )

    def dead_letters(self) -> list[DeadLetterRecord]:
        with self._lock:
            rows = self.conn.execute("SELECT source, offset, field, reason, raw FROM dead_letters ORDER BY id")
            return [DeadLetterRecord(src, int(off), field, reason, bytes(raw)) for src, off, field, reason, raw in rows]
