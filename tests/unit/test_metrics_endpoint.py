"""The worker's Prometheus endpoint listens on loopback unless settings say otherwise: it has no
authentication, so exposing it is an explicit choice (`worker.metrics_host`)."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from streams.metrics import PrometheusSensor

PROC_TCP = Path("/proc/net/tcp")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses listening on `port`, read from the kernel's socket table (hex, as /proc shows them)."""
    found = set()
    for line in PROC_TCP.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


@pytest.mark.skipif(not PROC_TCP.is_file(), reason="reads Linux's /proc/net/tcp")
@pytest.mark.parametrize(("host", "expected"), [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_metrics_bind_loopback_by_default(host: str | None, expected: str) -> None:
    port = _free_port()
    sensor = PrometheusSensor()
    if host is None:
        sensor.serve(port)
    else:
        sensor.serve(port, host)
    assert _listening_addresses(port) == {expected}
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "fusionrec_events_total" in body


def test_ready_answers_503_until_warmed_up_then_200() -> None:
    """/ready is what a rolling deploy waits for (deploy/k8s/worker.yaml's readinessProbe) before it
    stops the worker being replaced."""
    port = _free_port()
    sensor = PrometheusSensor()
    sensor.serve(port)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)
    assert refused.value.code == 503
    sensor.set_ready(True)
    answer = urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=5)
    assert answer.status == 200 and answer.read() == b"ready\n"
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "fusionrec_worker_ready 1.0" in body
