"""deploy/local/timer_slack.sh: the local Cassandra nodes start with a coarser timer slack (see the
script for why), and a bad value is one clear error before anything starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "deploy" / "local" / "timer_slack.sh"
HOME = Path(os.environ.get("FUSIONREC_SERVICES_HOME", REPO / ".local"))
LINUX_SLACK = Path("/proc/self/timerslack_ns").exists()


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    prelude = 'log() { printf "log: %s\\n" "$*" >&2; }; die() { printf "error: %s\\n" "$*" >&2; exit 1; }; '
    full_env = {k: v for k, v in os.environ.items() if k != "FUSIONREC_CASSANDRA_TIMER_SLACK_US"} | env
    return subprocess.run(
        ["bash", "-c", f'{prelude} source "{HELPER}"; {script}'], capture_output=True, text=True, env=full_env
    )


@pytest.mark.skipif(not LINUX_SLACK, reason="the timer slack is a Linux knob (/proc/self/timerslack_ns)")
def test_the_command_runs_with_the_slack_and_zero_keeps_the_kernels() -> None:
    default = _run("check_timer_slack; with_timer_slack cat /proc/self/timerslack_ns")
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == "200000"
    chosen = _run("with_timer_slack cat /proc/self/timerslack_ns", FUSIONREC_CASSANDRA_TIMER_SLACK_US="0500")
    assert chosen.stdout.strip() == "500000"  # a leading zero is decimal, not octal
    kernel = _run("cat /proc/self/timerslack_ns").stdout.strip()
    kept = _run("with_timer_slack cat /proc/self/timerslack_ns", FUSIONREC_CASSANDRA_TIMER_SLACK_US="0")
    assert kept.stdout.strip() == kernel


@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", "12345678"])
def test_a_bad_value_is_one_error(bad: str) -> None:
    out = _run("check_timer_slack; echo started", FUSIONREC_CASSANDRA_TIMER_SLACK_US=bad)
    assert out.returncode == 1
    assert "started" not in out.stdout
    assert out.stderr.startswith("error: FUSIONREC_CASSANDRA_TIMER_SLACK_US must be a whole number of microseconds")
    assert out.stderr.count("\n") == 1


@pytest.mark.integration
@pytest.mark.skipif(not LINUX_SLACK, reason="the timer slack is a Linux knob (/proc/self/timerslack_ns)")
def test_the_local_node_runs_every_thread_with_it(services: dict[str, str]) -> None:
    """The node that the tests use (started by deploy/local/services.sh): all its threads, those the
    JVM started after the launch too, carry the slack. A node started by an older services.sh fails
    here until `fusionrec services down` and up again."""
    pid = (HOME / "cassandra" / "cassandra.pid").read_text().strip()
    want = int(os.environ.get("FUSIONREC_CASSANDRA_TIMER_SLACK_US", "200")) * 1000
    tasks = list(Path(f"/proc/{pid}/task").iterdir())
    assert len(tasks) > 20  # the JVM's threads, not only its main one
    slacks = set()
    for task in tasks:
        try:
            slacks.add(int(Path(f"/proc/{task.name}/timerslack_ns").read_text()))
        except OSError:  # a thread that ended meanwhile
            continue
    if want:
        assert slacks == {want}
    else:  # the kernel's default, inherited alike
        assert len(slacks) == 1
