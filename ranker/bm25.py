"""BM25 (Robertson/Sparck Jones, Lucene's k1/b form) over item texts, as one sparse matrix of
precomputed term weights, so a query's scores are a sum of a few rows. Pure numpy: the matrix is kept
as its CSR arrays (a term's postings are one slice), built without scipy, whose import was 0.1 s of
every worker's start."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from ranker.text import tokenize

__all__ = ["BM25Index"]


class BM25Index:
    def __init__(self, texts: Sequence[str], k1: float = 1.2, b: float = 0.75) -> None:
        docs = [tokenize(t) for t in texts]
        self.vocab: dict[str, int] = {}
        rows: list[int] = []
        cols: list[int] = []
        tfs: list[float] = []
        for d, tokens in enumerate(docs):
            counts: dict[int, int] = {}
            for tok in tokens:
                term = self.vocab.setdefault(tok, len(self.vocab))
                counts[term] = counts.get(term, 0) + 1
            for term, n in counts.items():
                rows.append(term)
                cols.append(d)
                tfs.append(n)
        self.n_docs = len(docs)
        lengths = np.array([len(t) for t in docs], dtype=np.float64)
        avg = float(lengths.mean()) if len(docs) and lengths.mean() > 0 else 1.0
        r, c, tf = np.array(rows, np.int64), np.array(cols, np.int64), np.array(tfs, np.float64)
        df = np.bincount(r, minlength=len(self.vocab)).astype(np.float64)
        idf = np.log(1.0 + (self.n_docs - df + 0.5) / (df + 0.5))
        norm = tf + k1 * (1.0 - b + b * lengths[c] / avg)
        weights = idf[r] * tf * (k1 + 1.0) / norm
        # [terms, docs] in CSR form: each term's postings, documents ascending
        order = np.lexsort((c, r))
        self.indptr = np.zeros(len(self.vocab) + 1, dtype=np.int64)
        np.cumsum(df.astype(np.int64), out=self.indptr[1:])
        self.indices = c[order].astype(np.int32)
        self.data = weights[order].astype(np.float32)

    def parts(self) -> dict[str, np.ndarray]:
        """The index as plain arrays (terms in vocabulary order, the CSR arrays, the document count):
        what `from_parts` rebuilds it from, and what ranker.bm25_cache keeps between starts."""
        return {
            "terms": np.array(list(self.vocab), dtype=np.str_),
            "indptr": self.indptr,
            "indices": self.indices,
            "data": self.data,
            "n_docs": np.array(self.n_docs, dtype=np.int64),
        }

    @classmethod
    def from_parts(cls, parts: Mapping[str, np.ndarray]) -> BM25Index:
        """The index that `parts` was taken from, without tokenizing a text (ValueError when the arrays
        do not fit together)."""
        terms = [str(t) for t in parts["terms"].tolist()]
        indptr = np.asarray(parts["indptr"], dtype=np.int64)
        indices = np.asarray(parts["indices"], dtype=np.int32)
        data = np.asarray(parts["data"], dtype=np.float32)
        n_docs = int(parts["n_docs"])
        if (
            len(indptr) != len(terms) + 1
            or indptr[0] != 0
            or indptr[-1] != len(indices)
            or len(data) != len(indices)
            or np.any(np.diff(indptr) < 0)
            or (len(indices) and (indices.min() < 0 or indices.max() >= n_docs))
        ):
            raise ValueError("BM25 parts do not fit together")
        index = cls.__new__(cls)
        index.vocab = {t: n for n, t in enumerate(terms)}
        if len(index.vocab) != len(terms):
            raise ValueError("BM25 parts repeat a term")
        index.n_docs, index.indptr, index.indices, index.data = n_docs, indptr, indices, data
        return index

    def scores(self, query: str) -> np.ndarray:
        """BM25 score of every document for the query (zeros where no term matches); a repeated
        query term counts once per repeat, as in Lucene."""
        terms = [self.vocab[t] for t in tokenize(query) if t in self.vocab]
        if not terms:
            return np.zeros(self.n_docs, dtype=np.float32)
        # postings straight from the CSR arrays + one bincount: ~10x faster than sparse row indexing
        ip, idx, data = self.indptr, self.indices, self.data
        docs = np.concatenate([idx[ip[t] : ip[t + 1]] for t in terms])
        weights = np.concatenate([data[ip[t] : ip[t + 1]] for t in terms])
        return np.bincount(docs, weights=weights, minlength=self.n_docs).astype(np.float32)

    def top(self, query: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n best-scoring documents with a positive score, best first (ties: lower row first)."""
        return self.top_of(self.scores(query), n)

    @staticmethod
    def top_of(s: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """`top` over scores already computed."""
        hits = np.flatnonzero(s > 0)
        if len(hits) > n:
            hits = hits[np.argpartition(-s[hits], n - 1)[:n]]
        order = np.lexsort((hits, -s[hits]))
        return hits[order], s[hits[order]]
