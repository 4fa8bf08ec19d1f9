"""The secure local Cassandra's roles (run by secure.sh after the node listens): an admin superuser and
the application's login role, then the default `cassandra` superuser loses its login. Idempotent: when
the application's role can log in, nothing is done. Passwords come from the environment, never argv.
"""

from __future__ import annotations

import os
import ssl
import sys
import time

from cassandra import AuthenticationFailed
from cassandra.auth import PlainTextAuthProvider
from cassandra.cluster import Cluster, NoHostAvailable, Session


def _session(user: str, password: str) -> tuple[Cluster, Session]:
    ctx = ssl.create_default_context(cafile=os.environ["CA_FILE"])
    cluster = Cluster(
        ["127.0.0.1"],
        port=int(os.environ["CASSANDRA_PORT"]),
        auth_provider=PlainTextAuthProvider(username=user, password=password),
        ssl_context=ctx,
        protocol_version=5,
        connect_timeout=10,
    )
    try:
        return cluster, cluster.connect()
    except BaseException:
        cluster.shutdown()
        raise


def _refused(exc: NoHostAvailable) -> bool:
    return any(isinstance(e, AuthenticationFailed) for e in exc.errors.values())


def _login(user: str, password: str) -> tuple[Cluster, Session] | None:
    """A session, or None when the role cannot log in (the node answers and refuses)."""
    try:
        return _session(user, password)
    except NoHostAvailable as exc:
        if _refused(exc):
            return None
        raise


def main() -> int:
    app, app_pw = os.environ["APP_USER"], os.environ["CASSANDRA_APP_PASSWORD"]
    admin, admin_pw = "fusionrec_admin", os.environ["CASSANDRA_ADMIN_PASSWORD"]
    deadline = time.monotonic() + 90
    while True:  # the default superuser appears a moment after the node listens
        try:
            done = _login(app, app_pw)
            if done is not None:
                done[0].shutdown()
                print("cassandra_roles: roles already set up")
                return 0
            first = _login("cassandra", "cassandra")
            if first is not None:
                break
        except NoHostAvailable as exc:
            if time.monotonic() > deadline:
                print(f"cassandra_roles: error: the node did not answer: {exc}", file=sys.stderr)
                return 1
        if time.monotonic() > deadline:
            print("cassandra_roles: error: neither the app role nor the default superuser can log in", file=sys.stderr)
            return 1
        time.sleep(1)
    cluster, session = first
    try:
        session.execute(
            f"CREATE ROLE IF NOT EXISTS {admin} WITH SUPERUSER = true AND LOGIN = true AND PASSWORD = %s", (admin_pw,)
        )
    finally:
        cluster.shutdown()
    cluster, session = _session(admin, admin_pw)
    try:
        session.execute(f"CREATE ROLE IF NOT EXISTS {app} WITH LOGIN = true AND PASSWORD = %s", (app_pw,))
        session.execute("ALTER ROLE cassandra WITH SUPERUSER = false AND LOGIN = false")
    finally:
        cluster.shutdown()
    print(f"cassandra_roles: roles {admin} (superuser) and {app} created; the default superuser cannot log in")
    return 0


if __name__ == "__main__":
    sys.exit(main())
