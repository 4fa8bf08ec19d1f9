"""Datasets: the on-disk layout loader (items.csv + events.csv) and events derived from it.

Layout (as in ../shared/data/scientific/):
  items.csv   item_id, text            (or item_id, title[, description, category, brand])
  events.csv  user_id, item_id, and either ts (epoch ms) or position (0-based order per user)
When only positions exist, clock times are derived by interleaving users by position at a
fixed spacing, so a replay looks like many users shopping at once.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas.errors import ConfigError
from schemas.events import Event, EventType
from schemas.items import Item

__all__ = ["BASE_TS_MS", "Dataset", "load_dataset", "load_items", "load_items_file"]

BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: derived times are deterministic


@dataclass
class Dataset:
    name: str
    items: list[Item]
    events: list[Event]
    _by_user: dict[str, list[Event]] | None = field(default=None, repr=False)

    def by_user(self) -> dict[str, list[Event]]:
        if self._by_user is None:
            out: dict[str, list[Event]] = {}
            for ev in self.events:
                out.setdefault(ev.user_id, []).append(ev)
            self._by_user = out
        return self._by_user

    def item_sequences(self) -> Iterator[list[str]]:
        """Each user's item ids in order (searches left out): what co-occurrence models fit on."""
        for events in self.by_user().values():
            yield [e.item_id for e in events if e.item_id is not None]

    def item_counts(self) -> dict[str, int]:
        """Events per item (searches left out): the popularity that cold starts fall back on."""
        counts: dict[str, int] = {}
        for seq in self.item_sequences():
            for item in seq:
                counts[item] = counts.get(item, 0) + 1
        return counts

    def digest(self) -> str:
        h = hashlib.blake2b(digest_size=8)
        for ev in self.events:
            h.update(f"{ev.event_id}\x1f{ev.item_id}\x1f{ev.ts}\x1e".encode())
        return h.hexdigest()


def _read_csv(path: Path, required: set[str]) -> Iterator[dict[str, str]]:
    if not path.is_file():
        raise ConfigError(f"{path} not found: a dataset folder holds items.csv and events.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = required - set(reader.fieldnames or [])
        if missing:
            raise ConfigError(f"{path} lacks column(s) {sorted(missing)}; has {reader.fieldnames}")
        yield from reader


def load_items(path: Path) -> list[Item]:
    items: list[Item] = []
    if not path.is_file():
        raise ConfigError(f"{path} not found: a dataset folder holds items.csv and events.csv")
    with path.open(newline="", encoding="utf-8") as fh:
        cols = set(next(csv.reader(fh), []))
    text_col = "text" if "text" in cols else "title"
    for row in _read_csv(path, {"item_id", text_col}):
        title, category, brand = row[text_col], row.get("category", ""), row.get("brand", "")
        if text_col == "text" and not category:
            title, category, brand = split_item_text(title)
        items.append(
            Item(
                item_id=row["item_id"],
                title=title,
                description=row.get("description", ""),
                category=category,
                brand=brand,
            )
        )
    return items


def split_item_text(text: str) -> tuple[str, str, str]:
    """'title. category path. brand.' (the UniSRec/VQ-Rec layout) -> (title, category, brand).

    Text without at least three '. '-separated parts stays whole as the title.
    """
    parts = text.strip().rstrip(".").split(". ")
    if len(parts) < 3:
        return text, "", ""
    return ". ".join(parts[:-2]), parts[-2], parts[-1]


def load_items_file(path: str | Path) -> list[Item]:
    """Items from a CSV (as in a dataset folder) or a JSONL file of item records (schemas.decode_item)."""
    p = Path(path)
    if p.suffix in {".jsonl", ".ndjson", ".json"}:
        from schemas.codec import decode_item

        with p.open("rb") as fh:
            return [decode_item(line) for line in fh if line.strip()]
    return load_items(p)


def load_dataset(directory: str | Path, spacing_ms: int = 1000, limit_users: int | None = None) -> Dataset:
    """Load a dataset folder; events come back in time order (derived from positions when needed)."""
    root = Path(directory)
    items = load_items(root / "items.csv")
    rows = list(_read_csv(root / "events.csv", {"user_id", "item_id"}))
    if rows and "ts" not in rows[0] and "position" not in rows[0]:
        raise ConfigError(f"{root / 'events.csv'} needs a 'ts' or a 'position' column")
    user_rank: dict[str, int] = {}
    for row in rows:
        user_rank.setdefault(row["user_id"], len(user_rank))
    if limit_users is not None:
        rows = [r for r in rows if user_rank[r["user_id"]] < limit_users]
    has_ts = bool(rows) and "ts" in rows[0] and rows[0]["ts"] != ""
    keyed: list[tuple[int, int, int, dict[str, str]]] = []
    for i, row in enumerate(rows):
        try:
            order = int(row["ts"]) if has_ts else int(row["position"])
        except ValueError as exc:
            raise ConfigError(f"{root / 'events.csv'} row {i + 2}: not an integer: {exc}") from None
        keyed.append((order, user_rank[row["user_id"]], i, row))
    keyed.sort(key=lambda t: (t[0], t[1], t[2]))
    events: list[Event] = []
    for rank, (order, _, i, row) in enumerate(keyed):
        ts = order if has_ts else BASE_TS_MS + rank * spacing_ms
        suffix = row.get("position") or str(i)
        events.append(
            Event(
                event_id=f"{row['user_id']}:{suffix}",
                type=EventType.PURCHASE,
                user_id=row["user_id"],
                ts=ts,
                item_id=row["item_id"],
            )
        )
    return Dataset(name=root.name, items=items, events=events)
