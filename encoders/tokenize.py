"""Tokenization with the `tokenizers` library from tokenizer.json: no torch, no transformers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

__all__ = ["Batch", "TextTokenizer"]

Batch = dict[str, np.ndarray]


class TextTokenizer:
    def __init__(self, tokenizer_json: str | Path, max_length: int, pad_token_id: int) -> None:
        self.tok = Tokenizer.from_file(str(tokenizer_json))
        self.tok.no_padding()
        self.tok.enable_truncation(max_length=max_length)
        self.max_length = max_length
        self.pad_token_id = pad_token_id

    def encode(self, texts: Sequence[str]) -> list[tuple[list[int], list[int]]]:
        """(ids, type_ids) per text, truncated at max_length, unpadded."""
        return [(e.ids, e.type_ids) for e in self.tok.encode_batch(list(texts))]

    def pad(self, encoded: Sequence[tuple[list[int], list[int]]]) -> Batch:
        """Pad to the longest in this batch only (callers bucket by length to keep that short)."""
        width = max(len(ids) for ids, _ in encoded)
        n = len(encoded)
        input_ids = np.full((n, width), self.pad_token_id, dtype=np.int64)
        attention = np.zeros((n, width), dtype=np.int64)
        types = np.zeros((n, width), dtype=np.int64)
        for row, (ids, type_ids) in enumerate(encoded):
            input_ids[row, : len(ids)] = ids
            attention[row, : len(ids)] = 1
            types[row, : len(type_ids)] = type_ids
        return {"input_ids": input_ids, "attention_mask": attention, "token_type_ids": types}
