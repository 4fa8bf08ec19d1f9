"""Service commands: the local real Kafka + Cassandra (`services up|down|status|logs`) and the
Cassandra schema (`cassandra migrate`)."""

from __future__ import annotations

from typing import Annotated, Literal

import typer

from fusionrec.commands.context import settings
from fusionrec.services import run_services
from schemas.cql import replication_clause
from streams.stores.cassandra import connect, migrate

__all__ = ["register"]

Service = Annotated[Literal["kafka", "cassandra", "all"], typer.Argument(help="kafka, cassandra or all")]

services_app = typer.Typer(
    help="Local real Kafka (KRaft) and Cassandra 5.0, fetched from Maven Central.", no_args_is_help=True
)
cassandra_app = typer.Typer(help="Cassandra schema management.", no_args_is_help=True)


@services_app.command("up")
def services_up(service: Service = "all") -> None:
    """Fetch (once) and start the services; waits until each answers."""
    run_services("up", service)


@services_app.command("down")
def services_down(service: Service = "all") -> None:
    """Stop the services this project started."""
    run_services("down", service)


@services_app.command("status")
def services_status(service: Service = "all") -> None:
    """Say which services are running (exit 1 when any is stopped)."""
    raise typer.Exit(run_services("status", service, check=False))


@services_app.command("logs")
def services_logs(service: Service = "all") -> None:
    """Show the tail of each service's log."""
    run_services("logs", service)


@cassandra_app.command("migrate")
def cassandra_migrate(
    keyspace: Annotated[str | None, typer.Option(help="Keyspace (default: settings).")] = None,
    replication_factor: Annotated[int | None, typer.Option(min=1, help="SimpleStrategy factor.")] = None,
) -> None:
    """Create the keyspace and tables if missing (idempotent; safe on every deploy)."""
    c = settings().cassandra
    replication = replication_clause("SimpleStrategy", replication_factor) if replication_factor else c.replication()
    cluster, session = connect(c.hosts, c.port)
    try:
        for stmt in migrate(session, keyspace or c.keyspace, replication):
            typer.echo(stmt.splitlines()[0] + " ...")
    finally:
        cluster.shutdown()
    typer.echo(f"keyspace {keyspace or c.keyspace} ready (replication {replication})")


def register(app: typer.Typer) -> None:
    app.add_typer(services_app, name="services")
    app.add_typer(cassandra_app, name="cassandra")
