"""Service commands: the local real Kafka + Cassandra (`services up|down|status|logs`; `--secure` for the
SASL_SSL Kafka and password + TLS Cassandra of deploy/local/secure.sh, `--nodes 3` for the three-node
cluster of deploy/local/cluster.sh and its `kill`/`start NODE`) and the Cassandra schema (`cassandra migrate`)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated, Literal

import typer

from fusionrec.commands.context import settings
from fusionrec.services import SCRIPT, run_services
from schemas.cql import replication_clause
from schemas.errors import ConfigError, ServiceError
from streams.stores.cassandra import connect, migrate

__all__ = ["register"]

Service = Annotated[Literal["kafka", "cassandra", "all"], typer.Argument(help="kafka, cassandra or all")]
Secure = Annotated[
    bool,
    typer.Option(
        "--secure",
        help="The secure services (SASL_SSL Kafka on 19092, password + TLS Cassandra on 19042; settings written "
        "to fusionrec.secure.toml), beside the plain ones.",
    ),
]
Nodes = Annotated[int, typer.Option("--nodes", help="1: the single-node services; 3: the local three-node cluster.")]
Node = Annotated[str, typer.Argument(help="A cluster node: kafka1..3 or cassandra1..3.")]

services_app = typer.Typer(
    help="Local real Kafka (KRaft) and Cassandra 5.0, fetched from Maven Central.", no_args_is_help=True
)
cassandra_app = typer.Typer(help="Cassandra schema management.", no_args_is_help=True)


def _script(name: str, *args: str, check: bool = True) -> int:
    """Run a deploy/local script beside services.sh; its own lines explain a failure."""
    path = SCRIPT.parent / name
    if not path.is_file():
        raise ServiceError(f"{path} not found: `fusionrec services` works from a source checkout (pip install -e .)")
    # the script runs this interpreter's modules (fusionrec.localcerts, the Cassandra driver)
    env = {**os.environ, "FUSIONREC_PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(path), *args], check=False, env=env)
    if check and proc.returncode != 0:
        raise ServiceError(f"{name} {' '.join(args)} failed (exit {proc.returncode}); see the lines above")
    return proc.returncode


def _dispatch(action: str, service: str, secure: bool, nodes: int, check: bool = True) -> int:
    if nodes not in (1, 3):
        raise ConfigError(f"--nodes {nodes}: the local services come as 1 node or a 3-node cluster")
    if secure and nodes == 3:
        raise ConfigError("--secure and --nodes 3 do not combine: the secure services are single-node")
    if secure:
        return _script("secure.sh", action, service, check=check)
    if nodes == 3:
        if service != "all":
            raise ConfigError(f"--nodes 3 {action} acts on the whole cluster; name a node with `services kill|start`")
        return _script("cluster.sh", action, check=check)
    return run_services(action, service, check=check)


@services_app.command("up")
def services_up(service: Service = "all", secure: Secure = False, nodes: Nodes = 1) -> None:
    """Fetch (once) and start the services; waits until each answers."""
    _dispatch("up", service, secure, nodes)


@services_app.command("down")
def services_down(service: Service = "all", secure: Secure = False, nodes: Nodes = 1) -> None:
    """Stop the services this project started."""
    _dispatch("down", service, secure, nodes)


@services_app.command("status")
def services_status(service: Service = "all", secure: Secure = False, nodes: Nodes = 1) -> None:
    """Say which services are running (exit 1 when any is stopped)."""
    raise typer.Exit(_dispatch("status", service, secure, nodes, check=False))


@services_app.command("logs")
def services_logs(service: Service = "all", secure: Secure = False, nodes: Nodes = 1) -> None:
    """Show the tail of each service's log."""
    _dispatch("logs", service, secure, nodes)


@services_app.command("kill")
def services_kill(node: Node) -> None:
    """SIGKILL one node of the three-node cluster (a crash), e.g. `services kill cassandra2`."""
    _script("cluster.sh", "kill", node)


@services_app.command("start")
def services_start(node: Node) -> None:
    """Restart one killed node of the three-node cluster on its data; waits until it answers."""
    _script("cluster.sh", "start", node)


@cassandra_app.command("migrate")
def cassandra_migrate(
    keyspace: Annotated[str | None, typer.Option(help="Keyspace (default: settings).")] = None,
    replication_factor: Annotated[int | None, typer.Option(min=1, help="SimpleStrategy factor.")] = None,
) -> None:
    """Create the keyspace and tables if missing (idempotent; safe on every deploy)."""
    c = settings().cassandra
    replication = replication_clause("SimpleStrategy", replication_factor) if replication_factor else c.replication()
    cluster, session = connect(c.hosts, c.port, access=c)
    try:
        for stmt in migrate(session, keyspace or c.keyspace, replication):
            typer.echo(stmt.splitlines()[0] + " ...")
    finally:
        cluster.shutdown()
    typer.echo(f"keyspace {keyspace or c.keyspace} ready (replication {replication})")


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
    app.add_typer(cassandra_app, name="cassandra")
