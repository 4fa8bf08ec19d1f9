"""A small client for downstream services: read a user's list straight from Cassandra (one
prepared, token-aware key lookup: the replica that owns the user answers) or through the API."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx
from cassandra import ConsistencyLevel

from schemas.cql import SELECT_RECOMMENDATIONS
from schemas.errors import FusionrecError, StoreUnavailable
from schemas.recommendations import RecommendationList
from streams.stores.cassandra import _translated, connect, list_from_row

__all__ = ["API_KEY_ENV", "ApiClient", "ApiError", "CassandraListReader"]

API_KEY_ENV = "FUSIONREC_API_KEY"


class ApiError(FusionrecError):
    """The API answered with an error: `status` and its JSON body."""

    def __init__(self, status: int, body: Any) -> None:
        super().__init__(f"fusionrec API {status}: {body}")
        self.status = status
        self.body = body


class CassandraListReader:
    """`get(user_id)` -> the stored RecommendationList or None. Reuses one session; thread-safe."""

    def __init__(self, hosts: Sequence[str] = ("127.0.0.1",), port: int = 9042, keyspace: str = "fusionrec") -> None:
        self._translated = _translated
        self._cluster, self._session = connect(hosts, port)  # TokenAwarePolicy(DCAwareRoundRobinPolicy())
        with _translated("prepare"):
            self._stmt = self._session.prepare(SELECT_RECOMMENDATIONS.format(ks=keyspace))
        self._stmt.consistency_level = ConsistencyLevel.LOCAL_ONE  # a read of one's own list: fastest replica

    def get(self, user_id: str) -> RecommendationList | None:
        with self._translated("read list"):
            row = self._session.execute(self._stmt, (user_id,)).one()
        return None if row is None else list_from_row(row)

    def close(self) -> None:
        self._cluster.shutdown()

    def __enter__(self) -> CassandraListReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


class ApiClient:
    """The API over HTTP (keep-alive connection pool). Errors raise ApiError with the API's body;
    an unreachable API raises StoreUnavailable so callers can fall back. `api_key` (default: the
    FUSIONREC_API_KEY variable) goes in the Authorization header of every request, never in the URL."""

    def __init__(
        self, base_url: str = "http://127.0.0.1:8000", timeout_s: float = 2.0, api_key: str | None = None
    ) -> None:
        self.base_url = base_url
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        headers = {"Authorization": f"Bearer {key.strip()}"} if key.strip() else {}
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, headers=headers)

    def _get(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        try:
            r = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        except httpx.TransportError as exc:
            raise StoreUnavailable(f"fusionrec API unreachable: {exc}") from exc
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text
        if r.status_code >= 400 or not isinstance(body, dict):
            raise ApiError(r.status_code, body)
        return body

    def recommendations(self, user_id: str, k: int = 20, category: str | None = None) -> dict[str, Any]:
        return self._get(f"/v1/users/{quote(user_id, safe='')}/recommendations", {"k": k, "category": category})

    def similar(self, item_id: str, k: int = 20) -> dict[str, Any]:
        return self._get(f"/v1/items/{quote(item_id, safe='')}/similar", {"k": k})

    def search(self, q: str, k: int = 20, user_id: str | None = None) -> dict[str, Any]:
        return self._get("/v1/search", {"q": q, "k": k, "user_id": user_id})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
