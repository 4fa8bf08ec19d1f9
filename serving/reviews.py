"""Item reviews for tagging: CSV (item_id, text) or JSONL ({"item_id": .., "text": ..}) -> item_id -> texts.

Strict, because reviews only add to tags: a file that is missing, not UTF-8 (a byte-order mark
is fine), lacks its columns, or holds a bad line raises ConfigError/DataError naming the file
and the line (or byte offset), never a traceback.
"""

from __future__ import annotations

import codecs
import csv
import json
from pathlib import Path

from schemas.errors import ConfigError, DataError

__all__ = ["load_reviews"]

_JSON_SUFFIXES = {".jsonl", ".ndjson", ".json"}


def load_reviews(path: str | Path) -> dict[str, list[str]]:
    """Reviews as CSV (item_id, text) or JSONL ({"item_id": .., "text": ..}) -> item_id -> texts, in file order."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p} not found: give a reviews file (CSV item_id,text or JSONL)")
    try:
        return _load_jsonl(p) if p.suffix in _JSON_SUFFIXES else _load_csv(p)
    except OSError as exc:
        raise ConfigError(f"{p} cannot be read: {exc.strerror}") from None


def _load_jsonl(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with path.open("rb") as fh:
        offset = 0
        for n, raw in enumerate(fh, 1):
            start, offset = offset, offset + len(raw)
            line = raw[len(codecs.BOM_UTF8) :] if n == 1 and raw.startswith(codecs.BOM_UTF8) else raw
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as exc:
                at = start + (len(raw) - len(line)) + exc.start
                raise DataError(
                    f"{path}:{n}: not UTF-8: byte 0x{line[exc.start]:02x} at offset {at} cannot be decoded; "
                    "save the file as UTF-8"
                ) from None
            try:
                rec = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: not valid JSON: {exc.msg} (column {exc.colno})") from None
            if not isinstance(rec, dict) or rec.get("item_id") in (None, "") or rec.get("text") is None:
                raise DataError(f'{path}:{n}: a review needs item_id and text, e.g. {{"item_id": "A1", "text": "..."}}')
            out.setdefault(str(rec["item_id"]), []).append(str(rec["text"]))
    return out


def _load_csv(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.reader(fh)
        try:
            header = [name.strip() for name in next(reader, [])]
            if not {"item_id", "text"} <= set(header):
                raise ConfigError(f"{path}: needs columns item_id,text; has {header}")
            i_id, i_text = header.index("item_id"), header.index("text")
            start = reader.line_num + 1
            for row in reader:
                if row:
                    if len(row) <= max(i_id, i_text):
                        raise DataError(
                            f"{path}:{start}: {len(row)} field(s) of {len(header)}: item_id and text needed"
                        )
                    if not row[i_id].strip():
                        raise DataError(f"{path}:{start}: field 'item_id' is empty")
                    out.setdefault(row[i_id], []).append(row[i_text])
                start = reader.line_num + 1
        except UnicodeDecodeError:
            raise _not_utf8(path) from None
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not readable as CSV: {exc}") from None
    return out


def _not_utf8(path: Path) -> DataError:
    """Where the first byte that is not UTF-8 is: offset and line (read again, only on this path)."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        return DataError(
            f"{path} is not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start} (line {line}) cannot be "
            "decoded; save the file as UTF-8"
        )
    return DataError(f"{path} is not UTF-8; save the file as UTF-8")
