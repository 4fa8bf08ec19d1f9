"""Kafka client settings from one place: `KafkaSettings` -> confluent-kafka's config dict and
faust/aiokafka's credentials + SSL context.

Every client goes through `kafka_client_config` (replay's producer, topic admin, the worker with its
dead-letter and items topics, the bench and test helpers), so they all authenticate the same way,
and a setting that cannot work is one ConfigError before any connection is tried. The password
lives only in the returned config; nothing here logs or prints it.
"""

from __future__ import annotations

import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schemas.errors import ConfigError
from streams.settings import KafkaSettings

__all__ = ["ClientLog", "KafkaClientConfig", "confluent_config", "kafka_client_config", "refusal"]

log = logging.getLogger("fusionrec.kafka")

SASL = frozenset({"SASL_PLAINTEXT", "SASL_SSL"})
TLS = frozenset({"SSL", "SASL_SSL"})
_TIMING = re.compile(r"\s*\(after \d+ms[^)]*\)")


class ClientLog:
    """librdkafka's log of one client (its `logger`): each distinct line once to `fusionrec.kafka`, since
    a refused connection is retried every ~100 ms and would repeat its line hundreds of times; the
    latest lines stay readable (`recent`) so a refusal can be named (`refusal`)."""

    def __init__(self, keep: int = 50) -> None:
        self.keep = keep
        self.recent: list[str] = []
        self._seen: set[str] = set()

    def log(self, level: int, fmt: str, *args: object) -> None:
        message = fmt % args if args else fmt
        self.recent = [*self.recent[-(self.keep - 1) :], str(args[-1]) if args else message]  # without fac [name]
        key = _TIMING.sub("", message)
        if key not in self._seen and len(self._seen) < 1000:
            self._seen.add(key)
            log.log(level, "%s", message)


@dataclass(frozen=True)
class KafkaClientConfig:
    """What a client needs to reach the brokers; `repr` shows no secret."""

    bootstrap: str
    security_protocol: str
    sasl_mechanism: str | None
    username: str | None
    password: str | None = field(repr=False)
    ssl_context: ssl.SSLContext | None = field(repr=False)
    security: dict[str, object] = field(repr=False)  # librdkafka keys: protocol, SASL, TLS files

    def confluent(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """A new confluent-kafka config: bootstrap, security, librdkafka's log through a new `ClientLog`
        (formatted lines in `fusionrec.kafka`, not raw `%3|...` on stderr), then the caller's keys."""
        return {"bootstrap.servers": self.bootstrap, **self.security, "logger": ClientLog(), **(extra or {})}

    def faust_options(self) -> dict[str, Any]:
        """`faust.App` keyword arguments: one broker URL per bootstrap host, and broker_credentials (SASL
        or TLS, holding the SSL context) unless PLAINTEXT."""
        from faust.auth import SASLCredentials, SSLCredentials  # lazy: faust costs ~0.7 s at import

        options: dict[str, Any] = {"broker": [f"kafka://{h.strip()}" for h in self.bootstrap.split(",") if h.strip()]}
        if self.security_protocol in SASL:
            options["broker_credentials"] = SASLCredentials(
                username=self.username,
                password=self.password,
                ssl_context=self.ssl_context,
                mechanism=self.sasl_mechanism,
            )
        elif self.security_protocol in TLS:
            options["broker_credentials"] = SSLCredentials(self.ssl_context)
        return options


def _file(kafka: KafkaSettings, key: str) -> str | None:
    value: str | None = getattr(kafka, key)
    if value is not None and not Path(value).is_file():
        raise ConfigError(f"kafka.{key}: {value}: no such file (FUSIONREC_KAFKA__{key.upper()})")
    return value


def _ssl_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """The context aiokafka uses, built here for every protocol with TLS so that a CA, certificate or
    key that cannot be loaded fails now, naming the setting, whichever client asked."""
    try:
        ctx = ssl.create_default_context(cafile=ca)
    except ssl.SSLError as exc:
        raise ConfigError(f"kafka.ssl_ca_file: {ca}: not a PEM CA certificate ({exc.reason or exc})") from None
    if cert:
        try:
            ctx.load_cert_chain(cert, key)
        except ssl.SSLError as exc:
            raise ConfigError(
                f"kafka.ssl_cert_file / kafka.ssl_key_file: {cert} / {key}: not a PEM certificate and its "
                f"unencrypted private key ({exc.reason or exc})"
            ) from None
    return ctx


def kafka_client_config(kafka: KafkaSettings | str) -> KafkaClientConfig:
    """Validated client settings; a bare bootstrap string means a PLAINTEXT cluster (local tests, benches)."""
    if isinstance(kafka, str):
        kafka = KafkaSettings(bootstrap=kafka)
    protocol = kafka.security_protocol
    password = kafka.password.get_secret_value() if kafka.password is not None else None
    if protocol in SASL and (not kafka.username or not password):
        raise ConfigError(
            f"kafka.security_protocol = {protocol} needs kafka.username and kafka.password "
            "(FUSIONREC_KAFKA__USERNAME, FUSIONREC_KAFKA__PASSWORD)"
        )
    if protocol not in SASL and (kafka.username or password):
        raise ConfigError(
            f"kafka.username / kafka.password are set but kafka.security_protocol = {protocol} never sends them; "
            "set security_protocol = SASL_SSL (or SASL_PLAINTEXT), or remove them"
        )
    ca, cert, key = (_file(kafka, k) for k in ("ssl_ca_file", "ssl_cert_file", "ssl_key_file"))
    if protocol not in TLS and (ca or cert or key):
        raise ConfigError(
            f"kafka.ssl_* files are set but kafka.security_protocol = {protocol} does not use TLS; "
            "set security_protocol = SASL_SSL (or SSL), or remove them"
        )
    if bool(cert) != bool(key):
        raise ConfigError("kafka.ssl_cert_file and kafka.ssl_key_file go together (a client certificate and its key)")
    security: dict[str, object] = {"security.protocol": protocol}
    context = None
    if protocol in TLS:
        context = _ssl_context(ca, cert, key)
        security.update({"ssl.ca.location": ca, "ssl.certificate.location": cert, "ssl.key.location": key})
    if protocol in SASL:
        security.update(
            {"sasl.mechanism": kafka.sasl_mechanism, "sasl.username": kafka.username, "sasl.password": password}
        )
        if protocol == "SASL_PLAINTEXT" and kafka.sasl_mechanism == "PLAIN":
            log.warning("kafka_password_in_clear protocol=SASL_PLAINTEXT mechanism=PLAIN fix=use SASL_SSL")
    return KafkaClientConfig(
        bootstrap=kafka.bootstrap,
        security_protocol=protocol,
        sasl_mechanism=kafka.sasl_mechanism if protocol in SASL else None,
        username=kafka.username,
        password=password,
        ssl_context=context,
        security={k: v for k, v in security.items() if v is not None},
    )


def confluent_config(kafka: KafkaSettings | str, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """`kafka_client_config(kafka).confluent(extra)`: for a client built in one line."""
    return kafka_client_config(kafka).confluent(extra)


def refusal(cfg: KafkaClientConfig, code: str, message: str) -> str | None:
    """What to fix, when a librdkafka error (`KafkaError.name()` and `.str()`, or a log line with code "")
    means the cluster refused this client's settings rather than being down; None otherwise (then
    waiting may help). The messages name settings and users, never a password."""
    at = f"Kafka at {cfg.bootstrap}"
    if code == "_AUTHENTICATION" or "SASL authentication error" in message:
        return (
            f"{at} refused the {cfg.sasl_mechanism or 'SASL'} login of user {cfg.username!r}: "
            f"check kafka.username and kafka.password ({message})"
        )
    if "certificate verify failed" in message:
        return (
            f"TLS with {at} failed: the brokers' certificate is not signed by the CA in kafka.ssl_ca_file "
            f"({_named_file(cfg, 'ssl.ca.location')}) ({message})"
        )
    if code == "_SSL" or "ssl/tls alert" in message or "SSL routines" in message:
        return (
            f"TLS with {at} failed: the brokers refused this client's certificate (kafka.ssl_cert_file: "
            f"{_named_file(cfg, 'ssl.certificate.location')}; missing, expired or not signed by a CA they trust) "
            f"({message})"
        )
    if cfg.security_protocol not in TLS and "Disconnected" in message and "APIVERSION_QUERY" in message:
        return (
            f"{at} closed the connection at the first request: its listener expects TLS, and "
            f"kafka.security_protocol = {cfg.security_protocol} (set SASL_SSL or SSL and kafka.ssl_ca_file) "
            f"({message})"
        )
    return None


def _named_file(cfg: KafkaClientConfig, key: str) -> str:
    """The file a librdkafka key names in this config, for messages."""
    return str(cfg.security.get(key) or "unset")
