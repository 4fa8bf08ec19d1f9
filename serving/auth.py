"""Who may call the read API, how often, and how big a request may be: API keys with scopes,
a token bucket per key, request size limits, all in one pure ASGI middleware (`Guard`).

Keys are bearer secrets (`Authorization: Bearer <key>`, or `X-API-Key: <key>`), never part of
a URL: a query string ends up in access logs and proxies, so `?api_key=` (or `access_token`) is
refused with 400 on every path. The keys file holds one JSON object per line,
`{"id", "hash", "scopes", "rate_limit_per_s"?, "created"?}`; only the sha256 of each key is
stored. A key is 256 random bits, so a fast hash is enough: a slow one (scrypt) protects
guessable passwords, and would add milliseconds to every request here.

Scopes: `recommendations:read` (/v1/users/*, /v1/items/*, /v1/model, /v1/console/*), `search`
(/v1/search), `admin` (/metrics, /docs, /openapi.json, /redoc, and every path no rule names, so a
new endpoint is never public by accident). Public: /, /healthz, /readyz, /console/*; with
`serve.metrics_scope = "public"` also /metrics and the docs.

The keys file is read when the server starts: after adding or removing a key, restart it.
Rate limits are per worker process: `fusionrec serve --workers N` divides each rate and burst by
N so the total over the processes holds. A client on one keep-alive connection talks to one
process, so it alone sees rate/N; clients spread over connections (as load balancers and pools
do) get the whole rate.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import math
import os
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from schemas.errors import ConfigError
from serving.settings import ServeSettings

__all__ = [
    "ADMIN",
    "READ",
    "SCOPES",
    "SEARCH",
    "Guard",
    "GuardMiddleware",
    "KeyRecord",
    "KeyRing",
    "TokenBucket",
    "append_key",
    "hash_key",
    "load_guard",
    "new_key",
    "read_keys",
    "required_scope",
]

log = logging.getLogger("fusionrec.serving.auth")

READ, SEARCH, ADMIN = "recommendations:read", "search", "admin"
SCOPES = (READ, SEARCH, ADMIN)
_PREFIX = "sha256:"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_FIELDS = {"id", "hash", "scopes", "rate_limit_per_s", "created"}
_KEY_IN_URL = re.compile(rb"(?:^|&)(?:api_key|apikey|api-key|access_token)=", re.I)

_PUBLIC = frozenset({"/", "/healthz", "/readyz", "/console", "/favicon.ico"})
_DOCS = frozenset({"/metrics", "/docs", "/docs/oauth2-redirect", "/openapi.json", "/redoc"})
_SCOPED = (("/v1/search", SEARCH), ("/v1/users", READ), ("/v1/items", READ), ("/v1/model", READ), ("/v1/console", READ))


def new_key() -> str:
    """A fresh key: 256 random bits, URL-safe, with a prefix that secret scanners can match."""
    return "frk_" + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return _PREFIX + hashlib.sha256(key.encode()).hexdigest()


def required_scope(path: str, metrics_public: bool = False) -> str | None:
    """The scope a request path needs; None: public."""
    if path in _PUBLIC or path.startswith("/console/"):
        return None
    if path in _DOCS:
        return None if metrics_public else ADMIN
    for prefix, scope in _SCOPED:
        if path == prefix or path.startswith(prefix + "/"):
            return scope
    return ADMIN


@dataclass(frozen=True, slots=True)
class KeyRecord:
    id: str
    hash: str
    scopes: frozenset[str]
    rate_limit_per_s: float | None = None
    created: str | None = None

    def line(self) -> str:
        body: dict[str, Any] = {"id": self.id, "hash": self.hash, "scopes": sorted(self.scopes)}
        if self.rate_limit_per_s is not None:
            body["rate_limit_per_s"] = self.rate_limit_per_s
        if self.created is not None:
            body["created"] = self.created
        return json.dumps(body)


def _record(obj: Any, where: str) -> KeyRecord:
    if not isinstance(obj, dict):
        raise ConfigError(f"{where}: expected a JSON object {{id, hash, scopes}}")
    if unknown := sorted(set(obj) - _FIELDS):
        raise ConfigError(f"{where}: unknown field(s) {', '.join(unknown)} (known: {', '.join(sorted(_FIELDS))})")
    key_id, digest, scopes, rate = obj.get("id"), obj.get("hash"), obj.get("scopes"), obj.get("rate_limit_per_s")
    if not isinstance(key_id, str) or not _ID.match(key_id):
        raise ConfigError(f"{where}: id must be 1-64 letters, digits, '.', '_' or '-' (got {key_id!r})")
    if not isinstance(digest, str) or not _HASH.match(digest):
        raise ConfigError(f"{where}: hash must be 'sha256:' and 64 hex digits (key {key_id!r})")
    if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
        raise ConfigError(f"{where}: scopes must be a non-empty list of {', '.join(SCOPES)} (key {key_id!r})")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate < 0):
        raise ConfigError(f"{where}: rate_limit_per_s must be a number >= 0 (key {key_id!r})")
    created = obj.get("created")
    return KeyRecord(key_id, digest, frozenset(scopes), None if rate is None else float(rate), created)


def read_keys(path: str | Path) -> list[KeyRecord]:
    """Every key of a keys file (blank lines and `#` comments skipped); ConfigError naming the line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"API keys file {p}: no such file (make one: fusionrec keys create --id NAME --scopes {READ} --file {p})"
        ) from None
    except (OSError, UnicodeError) as exc:
        raise ConfigError(f"API keys file {p}: cannot be read: {exc}") from None
    out: list[KeyRecord] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"API keys file {p} line {n}: not JSON ({exc.msg})") from None
        out.append(_record(obj, f"API keys file {p} line {n}"))
    ids = [r.id for r in out]
    if dupes := sorted({i for i in ids if ids.count(i) > 1}):
        raise ConfigError(f"API keys file {p}: id(s) {', '.join(dupes)} appear more than once")
    return out


def append_key(path: str | Path, record: KeyRecord) -> None:
    """Add one key's line (the file is created owner-only); ConfigError if the id is taken."""
    _record(json.loads(record.line()), f"key {record.id!r}")
    p = Path(path)
    existing = read_keys(p) if p.exists() else []
    if any(r.id == record.id for r in existing):
        raise ConfigError(f"API keys file {p}: a key with id {record.id!r} exists already")
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    with os.fdopen(fd, "a", encoding="utf-8") as fh:
        if p.stat().st_size and not p.read_bytes().endswith(b"\n"):
            fh.write("\n")
        fh.write(record.line() + "\n")


class KeyRing:
    """Keys by the sha256 of their secret. A presented key is hashed and looked up by that digest:
    the lookup's timing depends on the digest only, which tells nothing about any stored key;
    the final check is `hmac.compare_digest`."""

    def __init__(self, records: Iterable[KeyRecord]) -> None:
        self._by_hash = {r.hash: r for r in records}

    def __len__(self) -> int:
        return len(self._by_hash)

    def __iter__(self) -> Iterator[KeyRecord]:
        return iter(self._by_hash.values())

    def find(self, key: str) -> KeyRecord | None:
        digest = hash_key(key)
        found = self._by_hash.get(digest)
        return found if found is not None and hmac.compare_digest(found.hash, digest) else None


class TokenBucket:
    """`burst` tokens, refilled at `rate` per second; a request takes one. The clock is passed in
    (monotonic seconds), so tests drive it by hand."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate, self.burst, self.tokens, self.stamp = rate, burst, burst, now

    def take(self, now: float) -> float:
        """0.0 when a token was taken, else the seconds until one will be there."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


@dataclass(frozen=True)
class Guard:
    """What the middleware enforces. `keys=None`: no auth (local use; every path open)."""

    keys: KeyRing | None = None
    rate_limit_per_s: float = 0.0  # per process; 0: none
    rate_burst: float = 1.0
    max_body_bytes: int = 65536
    max_header_bytes: int = 8192
    metrics_public: bool = False
    cors_origins: tuple[str, ...] = ()
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)


def load_guard(cfg: ServeSettings) -> Guard:
    """The `[serve]` section as a Guard for one of `cfg.workers` processes (rates and bursts divided
    among them). A keys file that cannot be used is a ConfigError; no keys file logs a warning."""
    keys = None
    if cfg.api_keys_file:
        records = read_keys(cfg.api_keys_file)
        if not records:
            raise ConfigError(f"API keys file {cfg.api_keys_file} holds no keys: add one with `fusionrec keys create`")
        keys = KeyRing(r if r.rate_limit_per_s is None else _per_process(r, cfg.workers) for r in records)
        log.info("event=auth keys=%d file=%s rate_limit_per_s=%s", len(keys), cfg.api_keys_file, cfg.rate_limit_per_s)
    else:
        log.warning(
            "event=auth_off NO API KEYS: serve.api_keys_file is unset, so every endpoint (lists, search, "
            "metrics, docs) answers anyone who can reach %s:%d. Fine for a local demo; otherwise create keys "
            "with `fusionrec keys create` and set serve.api_keys_file",
            cfg.host,
            cfg.port,
        )
    return Guard(
        keys=keys,
        rate_limit_per_s=cfg.rate_limit_per_s / cfg.workers,
        rate_burst=max(1.0, math.ceil(cfg.rate_burst / cfg.workers)),
        max_body_bytes=cfg.max_body_bytes,
        max_header_bytes=cfg.max_header_bytes,
        metrics_public=cfg.metrics_scope == "public",
        cors_origins=cfg.cors_origins,
    )


def _per_process(r: KeyRecord, workers: int) -> KeyRecord:
    return KeyRecord(r.id, r.hash, r.scopes, (r.rate_limit_per_s or 0.0) / workers, r.created)


Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


async def _answer(
    send: Send, status: int, error: str, detail: str, headers: Iterable[tuple[bytes, bytes]] = ()
) -> None:
    body = orjson.dumps({"error": error, "detail": detail})
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})


_CHALLENGE = b'Bearer realm="fusionrec"'


class GuardMiddleware:
    """Pure ASGI (no task per request, unlike BaseHTTPMiddleware): size limits, then the key, its
    scope and its rate. The key never reaches a log or an answer; the middleware runs on the event
    loop only, so the buckets need no lock."""

    def __init__(self, app: Any, guard: Guard) -> None:
        self.app, self.guard = app, guard
        self._buckets: dict[str, TokenBucket] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        g = self.guard
        size, auth, length, chunked = 0, None, None, False
        for name, value in scope["headers"]:
            size += len(name) + len(value) + 4  # "name: value\r\n"
            if name == b"authorization" or name == b"x-api-key":
                auth = (name, value)
            elif name == b"content-length":
                length = value
            elif name == b"transfer-encoding":
                chunked = True
        if size > g.max_header_bytes:
            await _answer(send, 431, "headers_too_large", f"request headers over {g.max_header_bytes} bytes")
            return
        if length is not None and (not length.isdigit() or int(length) > g.max_body_bytes):
            await _answer(send, 413, "payload_too_large", f"request body over {g.max_body_bytes} bytes")
            return
        if _KEY_IN_URL.search(scope["query_string"]):
            await _answer(
                send, 400, "bad_request", "API keys go in the Authorization header (Bearer), never in the URL"
            )
            return
        need = required_scope(scope["path"], g.metrics_public) if g.keys is not None else None
        if need is not None and not await self._admit(need, auth, send):
            return
        if chunked:
            await self._limited(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _admit(self, need: str, auth: tuple[bytes, bytes] | None, send: Send) -> bool:
        """Authenticate, authorise and rate-limit; answers the refusal itself and returns False."""
        assert self.guard.keys is not None
        key = _presented(auth)
        record = self.guard.keys.find(key) if key else None
        if record is None:
            detail = "an API key is required (Authorization: Bearer <key>)" if not key else "unknown API key"
            challenge = _CHALLENGE + (b', error="invalid_token"' if key else b"")
            await _answer(send, 401, "unauthorized", detail, [(b"www-authenticate", challenge)])
            return False
        if need not in record.scopes:
            scope_hdr = _CHALLENGE + b', error="insufficient_scope", scope="' + need.encode() + b'"'
            detail = f"key {record.id!r} lacks the scope {need!r}"
            await _answer(send, 403, "forbidden", detail, [(b"www-authenticate", scope_hdr)])
            return False
        wait = self._take(record)
        if wait > 0.0:
            retry = max(1, math.ceil(wait))
            detail = f"rate limit of key {record.id!r} reached: retry in {retry}s"
            await _answer(send, 429, "rate_limited", detail, [(b"retry-after", str(retry).encode())])
            return False
        return True

    def _take(self, record: KeyRecord) -> float:
        rate = self.guard.rate_limit_per_s if record.rate_limit_per_s is None else record.rate_limit_per_s
        if rate <= 0.0:
            return 0.0
        now = self.guard.clock()
        bucket = self._buckets.get(record.id)
        if bucket is None:
            bucket = self._buckets[record.id] = TokenBucket(rate, self.guard.rate_burst, now)
        return bucket.take(now)

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A body of unknown length (chunked): counted as it is read, refused once over the limit."""
        limit, seen, started = self.guard.max_body_bytes, 0, False

        async def counting() -> MutableMapping[str, Any]:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _BodyTooLarge
            return message

        async def sending(message: MutableMapping[str, Any]) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, sending)
        except _BodyTooLarge:
            if started:
                raise
            await _answer(send, 413, "payload_too_large", f"request body over {limit} bytes")


def _presented(auth: tuple[bytes, bytes] | None) -> str:
    if auth is None:
        return ""
    name, value = auth
    text = value.decode("latin-1").strip()
    if name == b"x-api-key":
        return text
    scheme, _, token = text.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
