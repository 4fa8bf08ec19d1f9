"""The `[serve]` settings section: what the read API needs to start (bundle, encoder, store, HTTP).

Defined here, below the CLI, so the API's wiring takes the section as it is; `fusionrec.settings`
composes it with the others and reads the TOML file and the environment once.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ServeSettings"]


class ServeSettings(BaseModel):
    """`fusionrec serve`: every key is also a flag of the command (flags win)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = Field("127.0.0.1", description="interface to listen on")
    port: int = Field(8000, ge=1, le=65535)
    workers: int = Field(1, ge=1, description="API processes (one per core is typical)")
    request_threads: int = Field(4, ge=1, description="request threads per process")
    threads: int = Field(1, ge=1, description="ONNX Runtime intra-op threads per request")
    bundle: str | None = Field(None, description="model bundle: items, popularity, user vectors, similar items")
    encoder: str | None = Field(None, description="text encoder export; default: the bundle's own copy")
    items: str | None = Field(None, description="items file (CSV or JSONL) when serving without a bundle")
    store_url: str | None = Field(None, description="where lists are read; default: Cassandra from [cassandra]")
    cache: str = Field("out/serving-cache", description="item text-vector cache (incremental)")
    dense_weight: float = Field(0.2, ge=0.0, le=1.0, description="dense share of the hybrid search")
    personal_weight: float = Field(0.5, ge=0.0, description="weight of the user's affinity in search")
