"""Running the CLI as a person does, for the bad-input tests: a subprocess, and the one-`error:`-line check."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path = REPO, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`fusionrec ARGS` in a subprocess, with no FUSIONREC_* (e.g. FUSIONREC_DEBUG) leaking in from the test run."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FUSIONREC_")}
    return subprocess.run(
        [sys.executable, "-m", "fusionrec", *args],
        cwd=cwd,
        env={**clean, "PYTHONPATH": str(REPO), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def assert_error(proc: subprocess.CompletedProcess[str], *needles: str) -> str:
    """Exit 2, exactly one `error:` line holding every needle, and no traceback; returns the line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = [ln for ln in out.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1, out[-3000:]
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]
