"""Datasets: the on-disk layout loader (items.csv + events.csv) and events derived from it.

Layout (as in ../shared/data/scientific/):
  items.csv   item_id, text            (or item_id, title[, description, category, brand])
  events.csv  user_id, item_id, and either ts (epoch ms) or position (0-based order per user)
When only positions exist, clock times are derived by interleaving users by position at a
fixed spacing, so a replay looks like many users shopping at once.

Bad input never ends in a traceback nor passes in silence:
- a file that cannot be read as a whole (missing, not UTF-8, no header, required columns
  missing, no rows, or more than half of its rows bad) raises ConfigError/DataError naming
  the file and, where it applies, the line, the field or the byte offset;
- a bad row (a field missing, an empty id, a ts/position that is not an integer, an exact
  duplicate of an earlier row) is skipped and counted by reason in `Dataset.report`
  (a LoadReport), logged once as `dataset_loaded ... skipped_<reason>=N`.
A UTF-8 byte-order mark is accepted. Events naming items absent from items.csv are kept
(the stream sees them too) and counted (`unknown_items`). Event ids are `user:position`
(or `user:row` without positions); a (user, position) seen before gets `#2`, `#3`, ... in
file order, so every event id is unique (`repeated_position` counts them).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from schemas.codec import decode_item
from schemas.errors import ConfigError, DataError, InvalidRecord
from schemas.events import Event, EventType
from schemas.items import Item

__all__ = [
    "BASE_TS_MS",
    "EVENT_SKIP_REASONS",
    "ITEM_SKIP_REASONS",
    "Dataset",
    "LoadReport",
    "category_labels",
    "load_dataset",
    "load_items",
    "load_items_file",
]

BASE_TS_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z: derived times are deterministic
TS_MAX = 2**53  # as schemas.codec: epoch ms still exact in a JSON double

#: Why an events.csv row can be skipped. All but `duplicate_event` are malformed rows: when more
#: than half of a file's rows are malformed, the file is rejected instead.
EVENT_SKIP_REASONS = ("missing_field", "extra_field", "empty_id", "bad_ts", "bad_position", "duplicate_event")
#: Why an items row (CSV or JSONL) can be skipped; all but `duplicate_item` are malformed rows.
ITEM_SKIP_REASONS = (
    "missing_field",
    "extra_field",
    "empty_id",
    "not_utf8",
    "bad_json",
    "invalid_item",
    "duplicate_item",
)
_NOT_MALFORMED = frozenset({"duplicate_event", "duplicate_item"})
UNKNOWN_EXAMPLES = 5

log = logging.getLogger("fusionrec.data")


@dataclass(frozen=True)
class LoadReport:
    """What loading a dataset kept, skipped (by reason) and noticed; logged once as `dataset_loaded`."""

    rows_read: int = 0  # data rows in events.csv (blank lines aside)
    events: int = 0  # events kept
    skipped: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(EVENT_SKIP_REASONS, 0))
    repeated_position: int = 0  # kept events whose (user, position) came earlier: their id has '#n'
    outside_limit: int = 0  # rows of users beyond `limit_users` (asked for, not an error)
    unknown_items: int = 0  # distinct item ids in events.csv absent from items.csv (events kept)
    unknown_item_events: int = 0  # events naming such an item
    unknown_item_examples: tuple[str, ...] = ()  # the first few of them, in event order
    item_rows_read: int = 0
    items: int = 0
    items_skipped: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(ITEM_SKIP_REASONS, 0))
    first_skipped: str | None = None  # where the first skipped row is and why ("events.csv line 7: ...")

    @property
    def skipped_total(self) -> int:
        return sum(self.skipped.values())

    @property
    def items_skipped_total(self) -> int:
        return sum(self.items_skipped.values())

    def log_fields(self) -> str:
        """The report as `key=value` pairs (every events.csv and items.csv reason, zero or not: stable keys)."""
        parts = [f"items={self.items}", f"events={self.events}", f"rows={self.rows_read}"]
        parts += [f"skipped_{k}={v}" for k, v in self.skipped.items()]
        parts += [
            f"repeated_position={self.repeated_position}",
            f"unknown_items={self.unknown_items}",
            f"unknown_item_events={self.unknown_item_events}",
        ]
        if self.unknown_item_examples:
            parts.append(f"unknown_item_examples={','.join(self.unknown_item_examples)}")
        if self.outside_limit:
            parts.append(f"outside_limit={self.outside_limit}")
        parts.append(f"item_rows={self.item_rows_read}")
        parts += [f"items_skipped_{k}={v}" for k, v in self.items_skipped.items() if v or k in _CSV_ITEM_REASONS]
        if self.first_skipped:
            parts.append(f"first_skipped={self.first_skipped!r}")
        return " ".join(parts)


_CSV_ITEM_REASONS = frozenset({"missing_field", "extra_field", "empty_id", "duplicate_item"})


@dataclass
class Dataset:
    name: str
    items: list[Item]
    events: list[Event]
    report: LoadReport | None = None  # what loading kept and skipped; None for datasets built in code
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


# ---------------------------------------------------------------------------------------------
# reading files


def _not_utf8_error(path: Path) -> DataError:
    """The error for a file that does not decode as UTF-8: the byte offset and line of the first bad byte."""
    try:
        data = path.read_bytes()
    except OSError as exc:  # pragma: no cover - it was readable a moment ago
        return DataError(f"{path} cannot be read: {exc.strerror}")
    hint = ""
    if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
        hint = " (it looks like UTF-16)"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return DataError(
            f"{path} is not UTF-8{hint}: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) "
            "cannot be decoded; save the file as UTF-8 (a byte-order mark is fine)"
        )
    return DataError(f"{path} is not UTF-8{hint}; save the file as UTF-8")


class _Tally:
    """Rows read and skipped by reason for one file, and where the first skip was."""

    def __init__(self, path: Path, reasons: tuple[str, ...], rows_noun: str = "rows") -> None:
        self.path = path
        self.rows_noun = rows_noun
        self.rows = 0
        self.skipped = dict.fromkeys(reasons, 0)
        self.first: tuple[int, str, str] | None = None  # (line, reason, detail) of the first malformed row
        self.first_any: str | None = None

    def skip(self, line: int, reason: str, detail: str) -> None:
        self.skipped[reason] += 1
        if self.first_any is None:
            self.first_any = f"{self.path.name} line {line}: {detail}"
        if self.first is None and reason not in _NOT_MALFORMED:
            self.first = (line, reason, detail)

    @property
    def malformed(self) -> int:
        return sum(v for k, v in self.skipped.items() if k not in _NOT_MALFORMED)

    def check(self) -> None:
        """Reject the file when more than half of its rows are malformed: it is the wrong file, not a bad row."""
        bad = self.malformed
        if bad and bad * 2 > self.rows and self.first is not None:
            line, _, detail = self.first
            counts = ", ".join(f"{k} {v}" for k, v in self.skipped.items() if v and k not in _NOT_MALFORMED)
            raise DataError(
                f"{self.path}: {bad} of {self.rows} {self.rows_noun} are bad ({counts}); "
                f"the first, line {line}: {detail}; fix the file (bad {self.rows_noun} are skipped only when few)"
            )


def _csv_rows(path: Path, what: str) -> Iterator[tuple[int, list[str]]]:
    """(line of the row's start, fields) for every non-blank row of a UTF-8 CSV, header first.

    Decoding and CSV errors become DataError naming the file and where.
    """
    if not path.is_file():
        raise ConfigError(f"{path} not found: {what}")
    try:
        fh = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    with fh:
        reader = csv.reader(fh)
        start = 1
        try:
            for row in reader:
                if row:
                    yield start, row
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise _not_utf8_error(path) from None
        except csv.Error as exc:
            raise DataError(f"{path} line {reader.line_num}: not readable as CSV: {exc}") from None


def _header(path: Path, rows: Iterator[tuple[int, list[str]]], expected: str) -> list[str]:
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path} is empty: expected a header row with {expected}")
    return [name.strip() for name in first[1]]


def _shape(row: list[str], used: list[int], width: int, header: list[str]) -> tuple[str, str] | None:
    """(reason, detail) when a row lacks a used field or carries extra non-empty ones (`used` ascending)."""
    n = len(row)
    if n <= used[-1]:
        lacking = next(header[i] for i in used if i >= n)
        return "missing_field", f"{n} field(s) of {width}: no '{lacking}'"
    if n > width and any(v.strip() for v in row[width:]):
        return "extra_field", f"{n} fields, the header has {width} (an unquoted comma?)"
    return None


# ---------------------------------------------------------------------------------------------
# items


def _read_items_csv(path: Path) -> tuple[list[Item], _Tally]:
    rows = _csv_rows(path, "a dataset folder holds items.csv and events.csv")
    header = _header(path, rows, "item_id and text (or title)")
    cols = {name: i for i, name in reversed(list(enumerate(header)))}
    text_col = "text" if "text" in cols else "title"
    missing = {"item_id", text_col} - cols.keys()
    if missing:
        raise ConfigError(f"{path} lacks column(s) {sorted(missing)}; has {header}")
    i_id, i_text = cols["item_id"], cols[text_col]
    i_desc, i_cat, i_brand = (cols.get(c) for c in ("description", "category", "brand"))
    used = sorted(i for i in (i_id, i_text, i_desc, i_cat, i_brand) if i is not None)
    width = len(header)
    tally = _Tally(path, ITEM_SKIP_REASONS)
    items: list[Item] = []
    seen: set[str] = set()
    for line, row in rows:
        tally.rows += 1
        if len(row) != width and (bad := _shape(row, used, width, header)):
            tally.skip(line, *bad)
            continue
        item_id = row[i_id]
        if not item_id.strip():
            tally.skip(line, "empty_id", "field 'item_id' is empty")
            continue
        if item_id in seen:
            tally.skip(line, "duplicate_item", f"item_id {item_id!r} came before (the first is kept)")
            continue
        seen.add(item_id)
        title = row[i_text]
        category = row[i_cat] if i_cat is not None else ""
        brand = row[i_brand] if i_brand is not None else ""
        if text_col == "text" and not category:
            title, category, brand = split_item_text(title)
        items.append(
            Item(
                item_id=item_id,
                title=title,
                description=row[i_desc] if i_desc is not None else "",
                category=category,
                brand=brand,
            )
        )
    tally.check()
    if not items:
        raise DataError(f"{path} has no items: a catalog needs at least one row under its header")
    return items, tally


def _log_items(path: Path, items: list[Item], tally: _Tally) -> None:
    skipped = " ".join(f"skipped_{k}={v}" for k, v in tally.skipped.items() if v)
    level = logging.WARNING if any(tally.skipped.values()) else logging.INFO
    log.log(
        level,
        "items_loaded path=%s items=%d rows=%d%s%s",
        path,
        len(items),
        tally.rows,
        f" {skipped}" if skipped else "",
        f" first_skipped={tally.first_any!r}" if tally.first_any else "",
    )


def load_items(path: Path) -> list[Item]:
    """Items from a dataset's items.csv; bad rows are skipped and logged (`items_loaded`), see the module doc."""
    items, tally = _read_items_csv(Path(path))
    _log_items(Path(path), items, tally)
    return items


#: A comma-separated part longer than this many words is a piece of a path, not a label.
LABEL_MAX_WORDS = 3


def category_labels(category: str) -> list[str]:
    """A category field as its labels, trimmed, de-duplicated, order kept; the first is the item's
    primary category. Pipes always separate labels ("Tools | Sanding"). Commas separate them only
    when every part is a short label ("Adventure, Comedy", "Science Fiction, Drama"): a category path
    uses commas inside its names ("Industrial & Scientific Tapes, Adhesives & Sealants Duct Tape",
    "Home > Bed, Bath"), so a field with `>` or `/`, or with a part over LABEL_MAX_WORDS words,
    keeps its commas."""
    labels: list[str] = []
    for chunk in category.split("|"):
        parts = [p.strip() for p in chunk.split(",")]
        pathlike = ">" in chunk or "/" in chunk or any(len(p.split()) > LABEL_MAX_WORDS for p in parts)
        for label in [chunk.strip()] if pathlike else parts:
            if label and label not in labels:
                labels.append(label)
    return labels


def split_item_text(text: str) -> tuple[str, str, str]:
    """'title. category path. brand.' (the UniSRec/VQ-Rec layout) -> (title, category, brand).

    Text without at least three '. '-separated parts stays whole as the title.
    """
    parts = text.strip().rstrip(".").split(". ")
    if len(parts) < 3:
        return text, "", ""
    return ". ".join(parts[:-2]), parts[-2], parts[-1]


def _read_items_jsonl(path: Path) -> tuple[list[Item], _Tally]:
    if not path.is_file():
        raise ConfigError(f"{path} not found: give an items file (CSV, or JSONL with one item record a line)")
    tally = _Tally(path, ITEM_SKIP_REASONS, rows_noun="lines")
    items: list[Item] = []
    seen: set[str] = set()
    try:
        fh = path.open("rb")
    except OSError as exc:
        raise ConfigError(f"{path} cannot be read: {exc.strerror}") from None
    with fh:
        for n, raw in enumerate(fh, 1):
            if n == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8) :]
            if not raw.strip():
                continue
            tally.rows += 1
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                tally.skip(n, "not_utf8", f"not UTF-8: byte 0x{raw[exc.start]:02x} at column {exc.start + 1}")
                continue
            try:
                item = decode_item(text)
            except InvalidRecord as exc:
                tally.skip(n, "bad_json" if exc.field == "$" else "invalid_item", str(exc))
                continue
            if item.item_id in seen:
                tally.skip(n, "duplicate_item", f"item_id {item.item_id!r} came before (the first is kept)")
                continue
            seen.add(item.item_id)
            items.append(item)
    tally.check()
    if not items:
        raise DataError(f"{path} has no items: expected one JSON item record a line")
    return items, tally


def load_items_file(path: str | Path) -> list[Item]:
    """Items from a CSV (as in a dataset folder) or a JSONL file of item records (schemas.decode_item).

    Bad lines/rows are skipped and logged by reason (`items_loaded ... skipped_bad_json=N`); a file
    with more than half of them bad is rejected with a DataError naming file and line.
    """
    p = Path(path)
    if p.suffix in {".jsonl", ".ndjson", ".json"}:
        items, tally = _read_items_jsonl(p)
    else:
        items, tally = _read_items_csv(p)
    _log_items(p, items, tally)
    return items


# ---------------------------------------------------------------------------------------------
# events


def load_dataset(directory: str | Path, spacing_ms: int = 1000, limit_users: int | None = None) -> Dataset:
    """Load a dataset folder; events come back in time order (derived from positions when needed).

    `Dataset.report` says what was kept and skipped; see the module doc for what is an error.
    """
    root = Path(directory)
    if not root.is_dir():
        raise ConfigError(f"{root} not found: a dataset folder holds items.csv and events.csv")
    items, item_tally = _read_items_csv(root / "items.csv")
    path = root / "events.csv"
    rows = _csv_rows(path, "a dataset folder holds items.csv and events.csv")
    header = _header(path, rows, "user_id, item_id and ts or position")
    cols = {name: i for i, name in reversed(list(enumerate(header)))}
    missing = {"user_id", "item_id"} - cols.keys()
    if missing:
        raise ConfigError(f"{path} lacks column(s) {sorted(missing)}; has {header}")
    if "ts" not in cols and "position" not in cols:
        raise ConfigError(f"{path} needs a 'ts' or a 'position' column; has {header}")
    i_user, i_item = cols["user_id"], cols["item_id"]
    i_ts, i_pos = cols.get("ts"), cols.get("position")
    first = next(rows, None)
    if first is None:
        raise DataError(f"{path} has no events: expected one row per event under its header")
    # the clock comes from `ts` when the first row has one (or there is no `position`), else from positions
    has_ts = i_ts is not None and (i_pos is None or (len(first[1]) > i_ts and first[1][i_ts] != ""))
    i_order = i_ts if has_ts else i_pos
    assert i_order is not None
    order_name, order_reason = ("ts", "bad_ts") if has_ts else ("position", "bad_position")
    order_max = TS_MAX if has_ts else None
    used = sorted({i_user, i_item, i_order})
    width = len(header)

    tally = _Tally(path, EVENT_SKIP_REASONS)
    user_rank: dict[str, int] = {}
    seen_rows: set[tuple[str, str, int]] = set()
    seen_ids: dict[str, int] = {}  # event id -> how many rows claimed it
    repeated = outside = 0
    keyed: list[tuple[int, int, int, str, str, str]] = []

    def rows_with_first() -> Iterator[tuple[int, list[str]]]:
        yield first
        yield from rows

    for line, row in rows_with_first():
        tally.rows += 1
        if len(row) != width and (bad := _shape(row, used, width, header)):
            tally.skip(line, *bad)
            continue
        user_id, item_id, raw_order = row[i_user], row[i_item], row[i_order]
        if not user_id.strip() or not item_id.strip():
            tally.skip(line, "empty_id", f"field '{'user_id' if not user_id.strip() else 'item_id'}' is empty")
            continue
        try:
            order = int(raw_order)
        except ValueError:
            tally.skip(line, order_reason, f"field '{order_name}': not an integer: {raw_order!r}")
            continue
        if order < 0 or (order_max is not None and order >= order_max):
            tally.skip(line, order_reason, f"field '{order_name}': out of range: {order}")
            continue
        rank = user_rank.setdefault(user_id, len(user_rank))
        if limit_users is not None and rank >= limit_users:
            outside += 1
            continue
        key = (user_id, item_id, order)
        if key in seen_rows:
            tally.skip(line, "duplicate_event", f"the same user, item and {order_name} as an earlier row")
            continue
        seen_rows.add(key)
        position = row[i_pos] if i_pos is not None and len(row) > i_pos else ""
        event_id = f"{user_id}:{position or len(keyed)}"
        claimed = seen_ids.get(event_id)
        if claimed is None:
            seen_ids[event_id] = 1
        else:  # same user, same position: a real event all the same, so a distinct id, in file order
            seen_ids[event_id] = claimed + 1
            event_id = f"{event_id}#{claimed + 1}"
            repeated += 1
        keyed.append((order, rank, len(keyed), user_id, item_id, event_id))
    tally.check()
    keyed.sort()

    known = {it.item_id for it in items}
    unknown: dict[str, None] = {}
    unknown_events = 0
    purchase = EventType.PURCHASE
    events: list[Event] = []
    for n, (order, _, _, user_id, item_id, event_id) in enumerate(keyed):
        if item_id not in known:
            unknown_events += 1
            unknown[item_id] = None
        ts = order if has_ts else BASE_TS_MS + n * spacing_ms
        events.append(Event(event_id=event_id, type=purchase, user_id=user_id, ts=ts, item_id=item_id))

    report = LoadReport(
        rows_read=tally.rows,
        events=len(events),
        skipped=tally.skipped,
        repeated_position=repeated,
        outside_limit=outside,
        unknown_items=len(unknown),
        unknown_item_events=unknown_events,
        unknown_item_examples=tuple(unknown)[:UNKNOWN_EXAMPLES],
        item_rows_read=item_tally.rows,
        items=len(items),
        items_skipped=item_tally.skipped,
        first_skipped=item_tally.first_any or tally.first_any,
    )
    noisy = report.skipped_total or report.items_skipped_total or report.unknown_items or report.repeated_position
    log.log(logging.WARNING if noisy else logging.INFO, "dataset_loaded name=%s %s", root.name, report.log_fields())
    return Dataset(name=root.name, items=items, events=events, report=report)
