"""deploy/ (Dockerfile, compose, Kubernetes, Grafana) parsed and held against the code, so the
files cannot drift from it: no Docker daemon or cluster runs here, this test is their check.

Each `*_problems(deploy)` reads a deploy folder and returns one line per problem; the tests run
them on deploy/ (no problems) and on a broken copy (the problem named), so every check can fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from fusionrec.settings import Settings, load_settings
from schemas.errors import ConfigError
from serving.settings import ServeSettings

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
CHECKED = ("docker", "compose", "k8s", "README.md")  # deploy/local is the no-Docker dev setup, not a target
PREFIX = "FUSIONREC_"
NOT_SETTINGS = {"FUSIONREC_CONFIG", "FUSIONREC_DEBUG"}  # the settings file itself; tracebacks
ENV_NAME = re.compile(r"\bFUSIONREC_[A-Z0-9_]*[A-Z0-9]")
ROLES = {"worker": ("kafka", "cassandra", "worker"), "serve": ("cassandra", "serve"), "cassandra": ("cassandra",)}
SECRET = "from-a-secret"  # what a secretKeyRef stands for when the settings are loaded here


# --- reading ---------------------------------------------------------------------------------


def _rel(path: Path, deploy: Path) -> str:
    return str(path.relative_to(deploy.parent))


def _text_files(deploy: Path) -> Iterator[Path]:
    for part in CHECKED:
        top = deploy / part
        yield from sorted(p for p in top.rglob("*") if p.is_file()) if top.is_dir() else [top]


def _yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def _k8s(deploy: Path) -> list[dict[str, Any]]:
    """Every Kubernetes object of deploy/k8s, with `_file` naming where it came from."""
    objs = []
    for path in sorted((deploy / "k8s").glob("*.yaml")):
        if path.name != "kustomization.yaml":
            objs += [{**doc, "_file": _rel(path, deploy)} for doc in _yaml(path)]
    return objs


def _kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o.get("kind") == kind]


def _config_maps(deploy: Path, objs: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """ConfigMaps by name -> {key: text}: those in the manifests and kustomize's configMapGenerator."""
    maps = {o["metadata"]["name"]: dict(o.get("data", {})) for o in _kind(objs, "ConfigMap")}
    for gen in _yaml(deploy / "k8s" / "kustomization.yaml")[0].get("configMapGenerator", []):
        files = {}
        for entry in gen.get("files", []):
            key, _, name = entry.rpartition("=") if "=" in entry else (Path(entry).name, "", entry)
            files[key] = (deploy / "k8s" / name).read_text()
        maps[gen["name"]] = files
    return maps


def _dockerfile(deploy: Path) -> list[list[tuple[str, str]]]:
    """Stages of deploy/docker/Dockerfile, each a list of (INSTRUCTION, arguments); comments dropped."""
    lines = [
        ln for ln in (deploy / "docker" / "Dockerfile").read_text().splitlines() if not ln.lstrip().startswith("#")
    ]
    stages: list[list[tuple[str, str]]] = [[]]
    for raw in "\n".join(lines).replace("\\\n", " ").splitlines():
        if not raw.strip():
            continue
        instr, _, args = raw.strip().partition(" ")
        if instr.upper() == "FROM":
            stages.append([])
        stages[-1].append((instr.upper(), " ".join(args.split())))
    return stages


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any] | None:
    template = obj.get("spec", {}).get("template")
    return template["spec"] if obj.get("kind") in {"Deployment", "Job", "StatefulSet"} and template else None


def _role(args: list[str] | None) -> str | None:
    return args[0] if args and args[0] in ROLES else None


# --- the settings a workload will run with ---------------------------------------------------


def _not_a_setting(name: str) -> str | None:
    """Why FUSIONREC_<SECTION>__<KEY> names no field of `Settings`, or None when it does."""
    section, sep, key = name[len(PREFIX) :].lower().partition("__")
    fields = Settings.model_fields
    if section not in fields:
        return f"no setting {section!r} (see fusionrec.example.toml)"
    model = fields[section].annotation
    is_section = isinstance(model, type) and issubclass(model, BaseModel)
    if not sep:
        return f"{section} is a section: name a key, {PREFIX}{section.upper()}__<KEY>" if is_section else None
    if not is_section:
        return f"{section} is a setting, not a section"
    key, _, deeper = key.partition("__")
    if key not in model.model_fields:
        return f"no setting {section}.{key} (see fusionrec.example.toml)"
    if deeper and "dict" not in str(model.model_fields[key].annotation):
        return f"{section}.{key} has no keys"
    return None


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    """Exactly `env` as the FUSIONREC_* variables, for the duration."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update({k: v for k, v in saved.items() if not k.startswith(PREFIX)} | env)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _load(env: dict[str, str], toml: str | None, scratch: Path) -> Settings | str:
    """The settings a process with this environment (and settings file) reads, or the error it stops with."""
    scratch.mkdir(parents=True, exist_ok=True)
    config = scratch / f"settings-{len(list(scratch.iterdir()))}.toml"
    config.write_text(toml or "")
    with _environment({**env, "FUSIONREC_CONFIG": str(config)}):
        try:
            return load_settings()
        except ConfigError as exc:
            return str(exc)


def _image_env(deploy: Path) -> dict[str, str]:
    """The FUSIONREC_* defaults the runtime image sets (ENV), under every container's own."""
    env: dict[str, str] = {}
    for instr, args in _dockerfile(deploy)[-1]:
        if instr == "ENV":
            env |= {k: v for k, v in re.findall(r"(\w+)=(\S+)", args) if k.startswith(PREFIX)}
    return env


def _documented_worker_port() -> int:
    example = (REPO / "fusionrec.example.toml").read_text()
    found = re.search(r"^#?\s*metrics_port\s*=\s*(\d+)", example, re.M)
    assert found, "fusionrec.example.toml documents no worker metrics_port"
    return int(found.group(1))


# --- Kubernetes workloads ----------------------------------------------------------------------


def _k8s_workloads(deploy: Path, scratch: Path) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], Settings | str]]:
    """(where, the object, its fusionrec container, the settings it loads) for every fusionrec container."""
    objs = _k8s(deploy)
    maps = _config_maps(deploy, objs)
    for obj in objs:
        pod = _pod_spec(obj)
        for c in (pod or {}).get("containers", []):
            if not c.get("image", "").startswith("fusionrec"):
                continue
            where = f"{obj['_file']}: {obj['kind']}/{obj['metadata']['name']}"
            env = _image_env(deploy) | {
                e["name"]: str(e.get("value", SECRET)) for e in c.get("env", []) if e["name"].startswith(PREFIX)
            }
            toml = None
            if "FUSIONREC_CONFIG" in env:
                toml = _mounted_text(pod or {}, c, env.pop("FUSIONREC_CONFIG"), maps)
                if toml is None:
                    yield where, obj, c, "FUSIONREC_CONFIG names no file of a ConfigMap mounted in the container"
                    continue
            yield where, obj, c, _load(env, toml, scratch)


def _mount(pod: dict[str, Any], container: dict[str, Any], path: str) -> tuple[dict[str, Any], str] | None:
    """(the volume, the path inside it) holding `path` in the container, or None."""
    for m in container.get("volumeMounts", []):
        root = m["mountPath"].rstrip("/") + "/"
        if path.startswith(root):
            volume = next((v for v in pod.get("volumes", []) if v["name"] == m["name"]), None)
            return (volume, path[len(root) :]) if volume else None
    return None


def _mounted_text(
    pod: dict[str, Any], container: dict[str, Any], path: str, maps: dict[str, dict[str, str]]
) -> str | None:
    """The text of the ConfigMap key mounted at `path` in the container, or None."""
    found = _mount(pod, container, path)
    if not found or "configMap" not in found[0]:
        return None
    volume, inner = found
    items = {i["path"]: i["key"] for i in volume["configMap"].get("items", [])}
    key = items.get(inner) if items else inner
    return maps.get(volume["configMap"]["name"], {}).get(key or "")


def _file_settings(s: Settings, role: str) -> dict[str, str]:
    """`section.key -> path` of every *_file setting the role reads that is set."""
    out = {}
    for section in ROLES[role]:
        values = getattr(s, section)
        for name in type(values).model_fields:
            if name.endswith("_file") and getattr(values, name):
                out[f"{section}.{name}"] = getattr(values, name)
    return out


def workload_settings_problems(deploy: Path, scratch: Path) -> list[str]:
    """Each fusionrec container loads its settings, and every file a setting names is mounted there."""
    problems = []
    for where, obj, c, s in _k8s_workloads(deploy, scratch):
        if isinstance(s, str):
            problems.append(f"{where}: {s}")
            continue
        role = _role(c.get("args"))
        if role is None:
            problems.append(f"{where}: args {c.get('args')} start with none of {sorted(ROLES)}")
            continue
        for key, path in _file_settings(s, role).items():
            found = _mount(_pod_spec(obj) or {}, c, path)
            if found is None:
                problems.append(f"{where}: {key} = {path}: not on a volume mounted in the container")
                continue
            volume, inner = found
            items = [i["path"] for i in (volume.get("secret") or volume.get("configMap") or {}).get("items", [])]
            if items and inner not in items:
                problems.append(f"{where}: {key} = {path}: the volume {volume['name']} holds only {items}")
    return problems


def _ports(container: dict[str, Any]) -> dict[str | int, int]:
    """name and number -> number, for every declared container port."""
    out: dict[str | int, int] = {}
    for p in container.get("ports", []):
        out[p["containerPort"]] = p["containerPort"]
        if "name" in p:
            out[p["name"]] = p["containerPort"]
    return out


def _api_routes() -> set[str]:
    return set(re.findall(r"@app\.get\(\"([^\"]+)\"", (REPO / "serving" / "app.py").read_text()))


def k8s_port_problems(deploy: Path, scratch: Path) -> list[str]:
    """Container ports = the ports the settings listen on (= the defaults), probes and Services
    point at declared ports, ServiceMonitors at Service ports."""
    problems = []
    documented = {"serve": ServeSettings().port, "worker": _documented_worker_port()}
    pods: list[tuple[dict[str, str], dict[str, Any]]] = []
    for where, obj, c, s in _k8s_workloads(deploy, scratch):
        ports = _ports(c)
        pods.append((obj["spec"]["template"]["metadata"].get("labels", {}), c))
        role = _role(c.get("args"))
        if isinstance(s, str):
            continue  # reported by workload_settings_problems
        listens = {"serve": (s.serve.port, s.serve.host), "worker": (s.worker.metrics_port, s.worker.metrics_host)}
        if role in listens:
            (port, host), what = listens[role], "serve.port" if role == "serve" else "worker.metrics_port"
            if port not in ports.values():
                declared = sorted(set(ports.values()))
                problems.append(f"{where}: {what} is {port}, but the container declares ports {declared}")
            if port != documented[role]:
                problems.append(f"{where}: {what} is {port}, not the documented {documented[role]}")
            if host != "0.0.0.0":
                problems.append(f"{where}: {what} listens on {host}: unreachable from outside the pod")
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            probe = c.get(kind) or {}
            action = probe.get("httpGet") or probe.get("tcpSocket")
            if action is None:
                continue
            if action.get("port") not in ports:
                problems.append(f"{where}: {kind} port {action.get('port')!r} is not a container port")
            if "httpGet" in probe and role == "serve" and action["path"] not in _api_routes():
                problems.append(f"{where}: {kind} path {action['path']} is no route of serving/app.py")
            if "httpGet" in probe and role == "worker" and action["path"] not in ("/ready", "/metrics"):
                problems.append(f"{where}: {kind} path {action['path']} is not served by streams/metrics.py")
    objs = _k8s(deploy)
    services = _kind(objs, "Service")
    for svc in services:
        where = f"{svc['_file']}: Service/{svc['metadata']['name']}"
        selected = [c for labels, c in pods if svc["spec"]["selector"].items() <= labels.items()]
        if not selected:
            problems.append(f"{where}: selects no fusionrec pod")
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            for c in selected:
                if target not in _ports(c):
                    problems.append(f"{where}: targetPort {target!r} is not a port of container {c['name']}")
    for mon in _kind(objs, "ServiceMonitor"):
        where = f"{mon['_file']}: ServiceMonitor/{mon['metadata']['name']}"
        wanted_labels = mon["spec"]["selector"]["matchLabels"].items()
        chosen = [s for s in services if wanted_labels <= s["metadata"].get("labels", {}).items()]
        names = {p.get("name") for s in chosen for p in s["spec"]["ports"]}
        if not chosen:
            problems.append(f"{where}: selects no Service")
        for ep in mon["spec"]["endpoints"]:
            if ep["port"] not in names:
                problems.append(f"{where}: endpoint port {ep['port']!r} is not a port of {sorted(map(str, names))}")
    return problems


def _acl_allows(user: dict[str, Any], kind: str, name: str, operation: str) -> bool:
    for acl in user["spec"].get("authorization", {}).get("acls", []):
        r = acl["resource"]
        named = r.get("name") == name if r.get("patternType", "literal") == "literal" else name.startswith(r["name"])
        if r["type"] == kind and named and operation in acl.get("operations", []):
            return True
    return False


def k8s_kafka_cassandra_problems(deploy: Path, scratch: Path) -> list[str]:
    """The worker's settings name the Strimzi and K8ssandra resources that exist: topics (replicas
    <= partitions), user and ACLs, bootstrap listener, Cassandra service and datacenters."""
    problems = []
    objs = _k8s(deploy)
    topics = {t["spec"].get("topicName", t["metadata"]["name"]): t for t in _kind(objs, "KafkaTopic")}
    users = {u["metadata"]["name"]: u for u in _kind(objs, "KafkaUser")}
    kafkas = {k["metadata"]["name"]: k for k in _kind(objs, "Kafka")}
    rings = {k["metadata"]["name"]: k for k in _kind(objs, "K8ssandraCluster")}
    for where, obj, c, s in _k8s_workloads(deploy, scratch):
        role = _role(c.get("args"))
        if isinstance(s, str) or role is None:
            continue
        if role == "worker":
            k = s.kafka
            for name in (k.topic, k.dead_letter_topic, k.items_topic):
                if name not in topics:
                    problems.append(f"{where}: no KafkaTopic for topic {name!r}")
            source = topics.get(k.topic)
            if source:
                partitions, replicas = source["spec"]["partitions"], obj["spec"].get("replicas", 1)
                if replicas > partitions:
                    problems.append(
                        f"{where}: {replicas} worker replicas > {partitions} partitions of {k.topic}: "
                        "the extra workers would sit idle"
                    )
                if k.partitions != partitions:
                    problems.append(f"{where}: kafka.partitions is {k.partitions}, the KafkaTopic has {partitions}")
            user = users.get(k.username or "")
            if user is None:
                problems.append(f"{where}: kafka.username {k.username!r} is no KafkaUser ({sorted(users)})")
            else:
                for kind, name, op in (
                    ("topic", k.topic, "Read"),
                    ("topic", k.items_topic, "Read"),
                    ("topic", k.dead_letter_topic, "Write"),
                    ("group", k.group, "Read"),
                ):
                    if not _acl_allows(user, kind, name, op):
                        problems.append(f"{where}: KafkaUser {k.username} may not {op} {kind} {name}")
            host, _, port = k.bootstrap.partition(":")
            cluster = kafkas.get(host.split(".")[0].removesuffix("-kafka-bootstrap"))
            listener = next(
                (
                    li
                    for li in (cluster or {}).get("spec", {}).get("kafka", {}).get("listeners", [])
                    if str(li["port"]) == port
                ),
                None,
            )
            if listener is None:
                problems.append(
                    f"{where}: kafka.bootstrap {k.bootstrap} is no listener of a Strimzi Kafka ({sorted(kafkas)})"
                )
            elif listener.get("tls") != k.security_protocol.endswith("SSL") or (
                listener.get("authentication", {}).get("type", "").upper() != k.sasl_mechanism
                and k.security_protocol.startswith("SASL")
            ):
                problems.append(
                    f"{where}: kafka.security_protocol/sasl_mechanism do not match the listener {listener['name']}"
                )
        cs = s.cassandra
        dcs = {
            f"{name}-{dc['metadata']['name']}-service": dc["size"]
            for name, ring in rings.items()
            for dc in ring["spec"]["cassandra"]["datacenters"]
        }
        for host in cs.hosts:
            if host.split(".")[0] not in dcs:
                problems.append(f"{where}: cassandra.hosts {host!r} is no K8ssandra datacenter Service ({sorted(dcs)})")
        for dc, factor in cs.datacenters.items():
            size = next((n for svc, n in dcs.items() if svc.endswith(f"-{dc}-service")), 0)
            if factor > size:
                problems.append(
                    f"{where}: cassandra.datacenters.{dc} = {factor} replicas, the datacenter has {size} nodes"
                )
    return problems


# --- secrets -----------------------------------------------------------------------------------


def _operator_secrets(objs: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Secrets the operators make for the resources named here, with their documented keys."""
    made: dict[str, set[str]] = {}
    for o in objs:
        name, spec = o.get("metadata", {}).get("name", ""), o.get("spec", {})
        if o.get("kind") == "KafkaUser" and spec.get("authentication", {}).get("type", "").startswith("scram"):
            made[name] = {"password", "sasl.jaas.config"}  # Strimzi user operator
        elif o.get("kind") == "Kafka":
            for ca in ("cluster", "clients"):  # Strimzi: <cluster>-cluster-ca-cert, <cluster>-clients-ca-cert
                made[f"{name}-{ca}-ca-cert"] = {"ca.crt", "ca.p12", "ca.password"}
        elif o.get("kind") == "K8ssandraCluster" and not spec.get("cassandra", {}).get("superuserSecretRef"):
            made[f"{name}-superuser"] = {"username", "password"}  # K8ssandra: <cluster>-superuser
        elif o.get("kind") == "Certificate":  # cert-manager
            keys = {"tls.crt", "tls.key", "ca.crt"}
            stores = spec.get("keystores", {})
            keys |= {"keystore.jks", "truststore.jks"} if stores.get("jks", {}).get("create") else set()
            keys |= {"keystore.p12", "truststore.p12"} if stores.get("pkcs12", {}).get("create") else set()
            made[spec["secretName"]] = keys
    return made


def _readme_secrets(deploy: Path) -> dict[str, set[str]]:
    """Secrets deploy/README.md tells the operator to create: `kubectl create secret generic NAME --from-...`."""
    text = (deploy / "README.md").read_text().replace("\\\n", " ")
    made: dict[str, set[str]] = {}
    for name, rest in re.findall(r"create secret generic\s+([a-z0-9.-]+)([^\n]*)", text):
        keys = made.setdefault(name, set())
        for kind, first, second in re.findall(r"--from-(literal|file)=([^=\s]+)(=\S*)?", rest):
            keys.add(first if kind == "literal" or second else Path(first).name)
    return made


def _secret_refs(node: Any, parent: str = "") -> Iterator[tuple[str, str | None]]:
    """(secret, key) for every secret reference: secretKeyRef, *SecretRef, credentials, secret volumes."""
    if isinstance(node, dict):
        if (parent in {"secretKeyRef", "credentials"} or parent.endswith("SecretRef")) and "name" in node:
            yield node["name"], node.get("key")
        if parent == "secret" and "secretName" in node:
            items = node.get("items") or [{"key": None}]
            yield from ((node["secretName"], i["key"]) for i in items)
        for key, value in node.items():
            yield from _secret_refs(value, key)
    elif isinstance(node, list):
        for value in node:
            yield from _secret_refs(value, parent)


def secret_problems(deploy: Path) -> list[str]:
    """Every referenced secret key exists: in a Secret here, made by an operator for a resource
    here, or created by a command in deploy/README.md."""
    objs = _k8s(deploy)
    known = {
        o["metadata"]["name"]: set(o.get("data", {})) | set(o.get("stringData", {})) for o in _kind(objs, "Secret")
    }
    known |= _operator_secrets(objs) | _readme_secrets(deploy)
    problems = []
    for o in objs:
        for name, key in _secret_refs({k: v for k, v in o.items() if k != "_file"}):
            where = f"{o['_file']}: {o['kind']}/{o['metadata']['name']}"
            if name not in known:
                problems.append(
                    f"{where}: secret {name!r}: not defined in deploy/k8s, made by an operator for a resource "
                    "there, nor created in deploy/README.md"
                )
            elif key is not None and key not in known[name]:
                problems.append(f"{where}: secret {name!r} has no key {key!r} (it has {sorted(known[name])})")
    return problems


# --- compose -----------------------------------------------------------------------------------


def _dotenv(path: Path) -> dict[str, str]:
    pairs = (ln.split("=", 1) for ln in path.read_text().splitlines() if "=" in ln and not ln.lstrip().startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _interpolate(value: str, env: dict[str, str], missing: list[str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?error}`, from the example env file."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if name in env:
            return env[name]
        if op.endswith("-"):
            return arg
        missing.append(name)
        return ""

    return re.sub(r"\$\{(\w+)(:?[-?])?([^}]*)\}", one, value)


def compose_problems(deploy: Path, scratch: Path) -> list[str]:
    """The fusionrec services load their settings, listen where Prometheus scrapes and the ports
    are published, and every ${VARIABLE} is in .env.example (the real .env stays out of git)."""
    folder = deploy / "compose"
    where = _rel(folder / "compose.yaml", deploy)
    compose = _yaml(folder / "compose.yaml")[0]
    example = _dotenv(folder / ".env.example")
    missing: list[str] = []
    _interpolate((folder / "compose.yaml").read_text(), example, missing)
    problems = [f"{where}: ${{{name}}} is not in .env.example" for name in sorted(set(missing))]
    if ".env" not in (folder / ".gitignore").read_text().split():
        problems.append(f"{_rel(folder, deploy)}/.gitignore: does not ignore .env (the secrets)")
    scrape = _yaml(folder / "prometheus.yml")[0]
    targets = {t for job in scrape["scrape_configs"] for sc in job.get("static_configs", []) for t in sc["targets"]}
    api_port, worker_port = ServeSettings().port, _documented_worker_port()
    for name, svc in compose["services"].items():
        for volume in svc.get("volumes", []):
            source = str(volume).split(":")[0]
            if source.startswith(".") and not (folder / source).exists():
                problems.append(f"{where}: {name}: mounts {source}, which does not exist")
        role = _role(svc.get("command"))
        if not str(svc.get("image", "")).startswith("fusionrec") or role is None:
            continue
        env = _image_env(deploy) | {
            k: _interpolate(str(v), example, [])
            for k, v in (svc.get("environment") or {}).items()
            if k.startswith(PREFIX)
        }
        s = _load(env, None, scratch)
        if isinstance(s, str):
            problems.append(f"{where}: {name}: {s}")
            continue
        published = {str(p).rsplit(":", 1)[-1] for p in svc.get("ports", [])}
        if role == "serve":
            if s.serve.port != api_port:
                problems.append(f"{where}: {name}: serve.port is {s.serve.port}, not the documented {api_port}")
            if published and str(s.serve.port) not in published:
                problems.append(
                    f"{where}: {name}: serve.port {s.serve.port} is not a published port {sorted(published)}"
                )
            if f"{name}:{s.serve.port}" not in targets:
                problems.append(f"{where}: {name}: prometheus.yml does not scrape {name}:{s.serve.port}")
            for url in s.serve.worker_metrics_urls:
                host, _, port = urlsplit(url).netloc.partition(":")
                if host in compose["services"] and port != str(worker_port):
                    problems.append(
                        f"{where}: {name}: serve.worker_metrics_urls {url}: the worker listens on {worker_port}"
                    )
        if role == "worker":
            if s.worker.metrics_port != worker_port:
                problems.append(
                    f"{where}: {name}: worker.metrics_port is {s.worker.metrics_port}, not the documented {worker_port}"
                )
            if f"{name}:{s.worker.metrics_port}" not in targets:
                problems.append(f"{where}: {name}: prometheus.yml does not scrape {name}:{s.worker.metrics_port}")
    return problems


# --- image and dashboard -----------------------------------------------------------------------


def dockerfile_problems(deploy: Path) -> list[str]:
    """The runtime stage installs `fusionrec[cpu]` only (no torch, transformers or train extra),
    from the builder's wheels; non-root; `fusionrec` entry point; a healthcheck; the default ports;
    and the builder copies every package the wheel is built from, all let through .dockerignore."""
    where = "deploy/docker/Dockerfile"
    stages = _dockerfile(deploy)
    runtime = stages[-1]
    problems = []
    args = dict(re.findall(r"(\w+)=(\S+)", " ".join(a for i, a in stages[0] if i == "ARG")))
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), runtime[0][1].split()[0])
    if base != "python:3.11-slim":
        problems.append(f"{where}: the runtime stage is FROM {base}, not python:3.11-slim")
    for instr, text in (step for stage in stages for step in stage):
        if instr == "RUN" and re.search(r"\btorch\b|\btransformers\b", text) and "find_spec" not in text:
            problems.append(f"{where}: RUN installs torch or transformers: {text[:80]}")
        for extras in re.findall(r"\[([\w,\s-]+)\]", text) if instr == "RUN" and "pip" in text else []:
            if {e.strip() for e in extras.split(",")} != {"cpu"}:
                problems.append(f"{where}: pip extras [{extras}]: the image installs the cpu extra only")
    installs = [a for i, a in runtime if i == "RUN" and "pip install" in a]
    if not installs or any("--no-index" not in a for a in installs):
        problems.append(f"{where}: the runtime stage must pip install with --no-index (the builder's wheels only)")
    user = next((a for i, a in reversed(runtime) if i == "USER"), "root")
    if user.split(":")[0] in {"root", "0"}:
        problems.append(f"{where}: the runtime stage runs as root")
    if next((json.loads(a) for i, a in runtime if i == "ENTRYPOINT"), None) != ["fusionrec"]:
        problems.append(f'{where}: ENTRYPOINT must be ["fusionrec"]')
    if not any(i == "HEALTHCHECK" for i, _ in runtime):
        problems.append(f"{where}: the runtime stage has no HEALTHCHECK")
    exposed = {int(p) for i, a in runtime if i == "EXPOSE" for p in a.split()}
    if exposed != {ServeSettings().port, _documented_worker_port()}:
        problems.append(f"{where}: EXPOSE {sorted(exposed)}, not serve.port and the documented worker.metrics_port")
    copied = {
        src.rstrip("/")
        for stage in stages
        for i, a in stage
        if i == "COPY" and "--from" not in a
        for src in a.split()[:-1]
        if not src.startswith("--")
    }
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]
    for init in sorted(p for top in {p.split(".")[0] for p in packages} for p in (REPO / top).rglob("__init__.py")):
        package = ".".join(init.parent.relative_to(REPO).parts)
        if package not in packages:
            problems.append(
                f"pyproject.toml: [tool.setuptools] packages lacks {package}: the wheel, so the image, leaves it out"
            )
    for needed in sorted({p.split(".")[0] for p in packages} | {"pyproject.toml", "README.md"}):
        if needed not in copied:
            problems.append(f"{where}: the builder does not COPY {needed} (a package of pyproject.toml)")
    ignore = (deploy / "docker" / "Dockerfile.dockerignore").read_text().split()
    allowed = {p[1:].rstrip("/") for p in ignore if p.startswith("!")}
    for path in sorted(copied - allowed if "*" in ignore else set()):
        problems.append(f"deploy/docker/Dockerfile.dockerignore: {path} is copied but not let through")
    return problems


def _exposed_metrics() -> set[str]:
    """Every series name the code's Prometheus metrics expose, with the client's suffixes."""
    suffixes = {
        "Counter": ("_total", "_created"),
        "Histogram": ("_bucket", "_sum", "_count", "_created"),
        "Gauge": ("",),
    }
    suffixes["Summary"] = ("", "_sum", "_count", "_created")
    names = set()
    for pkg in ("streams", "serving", "fusionrec"):
        for path in (REPO / pkg).rglob("*.py"):
            for kind, name in re.findall(
                r"\b(Counter|Gauge|Histogram|Summary)\(\s*\"([a-zA-Z_:][\w:]*)\"", path.read_text()
            ):
                base = name.removesuffix("_total") if kind == "Counter" else name
                names |= {base + s for s in suffixes[kind]}
    return names


def dashboard_problems(deploy: Path) -> list[str]:
    """Every fusionrec_* series a panel queries is exposed by the code, from a provisioned datasource."""
    problems = []
    provisioned = deploy / "compose" / "grafana" / "provisioning" / "datasources"
    uids = {d["uid"] for path in provisioned.glob("*.yml") for d in _yaml(path)[0]["datasources"]}
    exposed = _exposed_metrics()
    for path in sorted((deploy / "compose" / "grafana" / "dashboards").glob("*.json")):
        stack = [json.loads(path.read_text())]
        while stack:
            node = stack.pop()
            if isinstance(node, dict):
                if isinstance(node.get("expr"), str):
                    for name in sorted(set(re.findall(r"\bfusionrec_\w+", node["expr"])) - exposed):
                        problems.append(f"{_rel(path, deploy)}: {name}: no metric of that name in the code")
                uid = node.get("datasource", {}).get("uid") if isinstance(node.get("datasource"), dict) else None
                if uid is not None and uid not in uids:
                    problems.append(f"{_rel(path, deploy)}: datasource uid {uid!r} is not provisioned ({sorted(uids)})")
                stack += node.values()
            elif isinstance(node, list):
                stack += node
    return problems


def env_name_problems(deploy: Path) -> list[str]:
    """Every FUSIONREC_* variable named anywhere under deploy/ is a field of `Settings`."""
    problems = []
    for path in _text_files(deploy):
        for name in sorted(set(ENV_NAME.findall(path.read_text())) - NOT_SETTINGS):
            why = _not_a_setting(name)
            if why:
                problems.append(f"{_rel(path, deploy)}: {name}: {why}")
    return problems


def deploy_problems(deploy: Path, scratch: Path) -> list[str]:
    return (
        env_name_problems(deploy)
        + workload_settings_problems(deploy, scratch)
        + k8s_port_problems(deploy, scratch)
        + k8s_kafka_cassandra_problems(deploy, scratch)
        + secret_problems(deploy)
        + compose_problems(deploy, scratch)
        + dockerfile_problems(deploy)
        + dashboard_problems(deploy)
    )


# --- the tests ---------------------------------------------------------------------------------


def test_every_file_parses() -> None:
    for path in _text_files(DEPLOY):
        if path.suffix in {".yaml", ".yml"}:
            assert _yaml(path), path
        elif path.suffix == ".json":
            json.loads(path.read_text())
        elif path.suffix == ".toml":
            tomllib.loads(path.read_text())
    kinds = {o["kind"] for o in _k8s(DEPLOY)}
    wanted = {"Kafka", "KafkaNodePool", "KafkaTopic", "KafkaUser", "K8ssandraCluster", "Deployment", "Service"}
    assert wanted | {"HorizontalPodAutoscaler", "PodDisruptionBudget", "ServiceMonitor"} <= kinds
    assert len(_dockerfile(DEPLOY)) >= 3  # preamble, builder, runtime


def test_env_names_are_settings() -> None:
    assert env_name_problems(DEPLOY) == []


def test_workloads_load_their_settings(tmp_path: Path) -> None:
    assert workload_settings_problems(DEPLOY, tmp_path) == []


def test_kubernetes_ports(tmp_path: Path) -> None:
    assert k8s_port_problems(DEPLOY, tmp_path) == []


def test_kubernetes_kafka_and_cassandra(tmp_path: Path) -> None:
    assert k8s_kafka_cassandra_problems(DEPLOY, tmp_path) == []


def test_secrets_exist() -> None:
    assert secret_problems(DEPLOY) == []


def test_compose(tmp_path: Path) -> None:
    assert compose_problems(DEPLOY, tmp_path) == []


def test_dockerfile() -> None:
    assert dockerfile_problems(DEPLOY) == []


def test_dashboard_metrics_exist() -> None:
    assert _exposed_metrics() >= {"fusionrec_events_total", "fusionrec_api_request_seconds_bucket"}
    assert dashboard_problems(DEPLOY) == []


BREAKS = [
    (
        "compose/compose.yaml",
        "FUSIONREC_KAFKA__BOOTSTRAP:",
        "FUSIONREC_KAFKA__BOOTSTRAPP:",
        "no setting kafka.bootstrapp",
    ),
    ("k8s/worker.yaml", "name: FUSIONREC_KAFKA__PASSWORD", "name: FUSIONREC_KAFKAS__PASSWORD", "no setting 'kafkas'"),
    ("k8s/fusionrec.toml", "security_protocol =", "security_protocl =", "kafka.security_protocl: unknown setting"),
    (
        "k8s/api.yaml",
        "containerPort: 8000",
        "containerPort: 8080",
        "serve.port is 8000, but the container declares ports [8080]",
    ),
    ("k8s/fusionrec.toml", "port = 8000", "port = 8080", "serve.port is 8080, not the documented 8000"),
    ("k8s/worker.yaml", "containerPort: 9108", "containerPort: 9109", "worker.metrics_port is 9108, but the container"),
    ("k8s/api.yaml", "targetPort: http", "targetPort: web", "targetPort 'web' is not a port of container api"),
    ("k8s/api.yaml", "path: /readyz", "path: /ready", "path /ready is no route of serving/app.py"),
    ("k8s/servicemonitors.yaml", "- port: metrics", "- port: prom", "endpoint port 'prom' is not a port"),
    (
        "compose/compose.yaml",
        '"127.0.0.1:8000:8000"',
        '"127.0.0.1:8000:8080"',
        "serve.port 8000 is not a published port",
    ),
    ("compose/prometheus.yml", '"worker:9108"', '"worker:9100"', "does not scrape worker:9108"),
    (
        "compose/.env.example",
        "GRAFANA_ADMIN_PASSWORD=",
        "GRAFANA_PASSWORD=",
        "${GRAFANA_ADMIN_PASSWORD} is not in .env.example",
    ),
    ("k8s/worker.yaml", "replicas: 4", "replicas: 13", "13 worker replicas > 12 partitions of clickstream"),
    (
        "k8s/kafka-user.yaml",
        "operations: [Describe, Write]",
        "operations: [Describe]",
        "may not Write topic clickstream.dead-letter",
    ),
    ("k8s/worker.yaml", "key: password", "key: passwd", "secret 'fusionrec-worker' has no key 'passwd'"),
    (
        "k8s/api.yaml",
        "secretName: fusionrec-api-keys",
        "secretName: fusionrec-api-key",
        "secret 'fusionrec-api-key': not",
    ),
    ("k8s/api.yaml", "path: keys.jsonl", "path: keys.json", "serve.api_keys_file = /etc/fusionrec/api-keys/keys.jsonl"),
    ("docker/Dockerfile", '"fusionrec[cpu]"', '"fusionrec[cpu,train]"', "pip extras [cpu,train]"),
    ("docker/Dockerfile", "USER ${UID}:${UID}", "USER root", "the runtime stage runs as root"),
    ("docker/Dockerfile.dockerignore", "!serving/", "", "serving is copied but not let through"),
    (
        "compose/grafana/dashboards/fusionrec.json",
        "fusionrec_consumer_lag",
        "fusionrec_consumer_lagg",
        "fusionrec_consumer_lagg: no metric",
    ),
]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    return deploy_problems(DEPLOY, tmp_path_factory.mktemp("baseline"))


@pytest.mark.parametrize(("file", "old", "new", "message"), BREAKS, ids=[f"{b[0]}:{b[3][:40]}" for b in BREAKS])
def test_each_check_fails_on_a_broken_copy(
    tmp_path: Path, baseline: list[str], file: str, old: str, new: str, message: str
) -> None:
    copy = tmp_path / "deploy"
    for part in CHECKED:
        src = DEPLOY / part
        (shutil.copytree if src.is_dir() else shutil.copy)(src, copy / part)
    target = copy / file
    text = target.read_text()
    assert old in text, f"{file} no longer holds {old!r}: update this case"
    target.write_text(text.replace(old, new, 1))
    problems = deploy_problems(copy, tmp_path / "scratch")
    assert any(message in p for p in problems), "\n".join(problems)
    assert not any(message in p for p in baseline)
