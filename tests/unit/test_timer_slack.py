"""deploy/local/timer_slack.sh: the local Kafka brokers and Cassandra nodes start with a coarser
timer slack (see the script for why), and a bad value is one clear error before anything starts."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HELPER = REPO / "deploy" / "local" / "timer_slack.sh"
HOME = Path(os.environ.get("FUSIONREC_SERVICES_HOME", REPO / ".local"))
LINUX_SLACK = Path("/proc/self/timerslack_ns").exists()
NAMES = ("CASSANDRA_TIMER_SLACK_US", "KAFKA_TIMER_SLACK_US")


def _run(script: str, **env: str) -> subprocess.CompletedProcess[str]:
    prelude = 'log() { printf "log: %s\\n" "$*" >&2; }; die() { printf "error: %s\\n" "$*" >&2; exit 1; }; '
    full_env = {k: v for k, v in os.environ.items() if k.removeprefix("FUSIONREC_") not in NAMES} | env
    return subprocess.run(
        ["bash", "-c", f'{prelude} source "{HELPER}"; {script}'], capture_output=True, text=True, env=full_env
    )


@pytest.mark.skipif(not LINUX_SLACK, reason="the timer slack is a Linux knob (/proc/self/timerslack_ns)")
@pytest.mark.parametrize("name", NAMES)
def test_the_command_runs_with_the_slack_and_zero_keeps_the_kernels(name: str) -> None:
    run = f'check_timer_slack {name}; with_timer_slack "${name}" cat /proc/self/timerslack_ns'
    default = _run(run)
    assert default.returncode == 0, default.stderr
    assert default.stdout.strip() == "200000"
    chosen = _run(run, **{f"FUSIONREC_{name}": "0500"})
    assert chosen.stdout.strip() == "500000"  # a leading zero is decimal, not octal
    kernel = _run("cat /proc/self/timerslack_ns").stdout.strip()
    kept = _run(run, **{f"FUSIONREC_{name}": "0"})
    assert kept.stdout.strip() == kernel


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("bad", ["abc", "-5", "1.5", "12345678"])
def test_a_bad_value_is_one_error(name: str, bad: str) -> None:
    out = _run(f"check_timer_slack {name}; echo started", **{f"FUSIONREC_{name}": bad})
    assert out.returncode == 1
    assert "started" not in out.stdout
    assert out.stderr.startswith(f"error: FUSIONREC_{name} must be a whole number of microseconds")
    assert out.stderr.count("\n") == 1


@pytest.mark.integration
@pytest.mark.skipif(not LINUX_SLACK, reason="the timer slack is a Linux knob (/proc/self/timerslack_ns)")
@pytest.mark.parametrize(("service", "name"), [("cassandra", NAMES[0]), ("kafka", NAMES[1])])
def test_the_local_services_run_every_thread_with_it(services: dict[str, str], service: str, name: str) -> None:
    """The broker and the node that the tests use (started by deploy/local/services.sh): all their
    threads, those the JVM started after the launch too, carry the slack. Services started by an
    older services.sh fail here until `fusionrec services down` and up again."""
    pid = (HOME / service / f"{service}.pid").read_text().strip()
    want = int(os.environ.get(f"FUSIONREC_{name}", "200")) * 1000
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
