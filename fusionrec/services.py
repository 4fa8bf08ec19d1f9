"""`fusionrec services`: the local real Kafka + Cassandra, via deploy/local/services.sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

from schemas.errors import ServiceError

__all__ = ["SCRIPT", "run_services"]

SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "local" / "services.sh"


def run_services(action: str, service: str = "all", check: bool = True) -> int:
    if not SCRIPT.is_file():
        raise ServiceError(f"{SCRIPT} not found: `fusionrec services` works from a source checkout (pip install -e .)")
    proc = subprocess.run(["bash", str(SCRIPT), action, service], check=False)
    if check and proc.returncode != 0 and action != "status":
        raise ServiceError(f"services {action} {service} failed (exit {proc.returncode}); see the lines above")
    return proc.returncode
