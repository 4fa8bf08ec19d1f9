"""The `[serve]` settings section: what the read API needs to start (bundle, encoder, store, HTTP).

Defined here, below the CLI, so the API's wiring takes the section as it is; `fusionrec.settings`
composes it with the others and reads the TOML file and the environment once.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from streams.settings import TextFromEnv

__all__ = ["ServeSettings", "parse_origins"]

_ORIGIN = re.compile(r"^(\*|https?://[^/\s,'\"]+)$")


def _text_list(value: Any) -> tuple[str, ...]:
    """A list from TOML, or one string from the environment (a `TextFromEnv` field): a JSON list or
    comma-separated items. Brackets and quotes are dropped, so `str()` of a tuple (how the serve
    command hands settings to its worker processes) reads back too; the items (origins, URLs) never
    hold commas or quotes. Blank items are left out."""
    if isinstance(value, str):
        value = [part.strip().strip("'\"") for part in value.strip().strip("[]()").split(",")]
    return tuple(str(v).strip() for v in value if str(v).strip())


def parse_origins(value: Any) -> tuple[str, ...]:
    """Browser origins, as `_text_list` reads them, each scheme://host[:port] or *."""
    out = tuple(origin.rstrip("/") for origin in _text_list(value))
    for origin in out:
        if not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not an origin: scheme://host[:port] with no path, or *")
    return out


class ServeSettings(BaseModel):
    """`fusionrec serve`: every key is also a flag of the command (flags win)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="API processes (one per core is typical)")
    request_threads: int = Field(4, ge=1, description="request threads per process")
    threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per request")
    query_cache: int = Field(10_000, ge=0, description="recent queries whose text vectors are kept; 0: none")
    bundle: str | None = Field(None, description="model bundle: items, popularity, user vectors, similar items")
    encoder: str | None = Field(None, description="text encoder export; default: the bundle's own copy")
    items: str | None = Field(None, description="items file (CSV or JSONL) when serving without a bundle")
    text_model: str | None = Field(
        None, description="without a bundle: the text-fused model `fusionrec demo` saved (similar items, console)"
    )
    store_url: str | None = Field(None, description="where lists are read; default: Cassandra from [cassandra]")
    cache: str = Field("out/serving-cache", description="item text-vector cache (incremental)")
    dense_weight: float = Field(0.2, ge=0.0, le=1.0, description="dense share of the hybrid search")
    personal_weight: float = Field(0.5, ge=0.0, description="weight of the user's affinity in search")
    api_keys_file: str | None = Field(None, description="hashed API keys with scopes (JSON lines); unset: no auth")
    rate_limit_per_s: float = Field(50.0, ge=0.0, description="requests/s per API key, all processes; 0: none")
    rate_burst: int = Field(100, ge=1, description="requests a key may send at once (token bucket size)")
    max_body_bytes: int = Field(65536, ge=0, description="larger request bodies are refused (413)")
    max_header_bytes: int = Field(8192, ge=256, description="larger request headers are refused (431)")
    cors_origins: Annotated[tuple[str, ...], TextFromEnv] = Field((), description="browser origins allowed (CORS)")
    metrics_scope: Literal["admin", "public"] = Field("admin", description="who reads /metrics and /docs")

    worker_metrics_urls: Annotated[tuple[str, ...], TextFromEnv] = Field(
        (), description="the streaming workers' /metrics URLs the console's live view scrapes"
    )
    reports_dir: str | None = Field(None, description="evaluation report folder (PNG plots) the console shows")

    @field_validator("worker_metrics_urls", mode="before")
    @classmethod
    def _urls(cls, value: Any) -> tuple[str, ...]:
        """The workers' metrics URLs, as `_text_list` reads them."""
        urls = _text_list(value)
        for url in urls:
            if not re.match(r"^https?://[^\s,'\"]+$", url):
                raise ValueError(f"{url!r} is not a URL: http://host:port/metrics")
        return urls

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> tuple[str, ...]:
        return parse_origins(value)
