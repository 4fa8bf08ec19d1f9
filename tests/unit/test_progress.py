"""Long work reports itself as a bar on a terminal and as plain log lines anywhere else."""

from __future__ import annotations

import logging

import pytest

from schemas import progress as progress_mod
from schemas.progress import LogProgress, progress


def test_not_a_terminal_gives_periodic_log_lines_and_a_last_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clock = iter(float(t) for t in range(0, 1000, 4))  # every call 4 s later
    monkeypatch.setattr(progress_mod.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="fusionrec.progress")
    bar = progress(range(10), desc="encode item texts", unit="text", every_s=10.0)
    assert isinstance(bar, LogProgress)
    assert list(bar) == list(range(10))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[-1].startswith("encode item texts: done 10/10 text in ")
    periodic = lines[:-1]
    assert periodic and all(line.startswith("encode item texts: ") and "/10 text" in line for line in periodic)
    assert len(periodic) < 10  # every 10 s, not every item
    assert not any("\r" in line or "%|" in line for line in lines)


def test_update_postfix_and_with_block(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="fusionrec.progress")
    with progress(total=3000, desc="replay -> clickstream", unit="ev") as bar:
        bar.update(1000)
        bar.update(2000)
        bar.set_postfix(valid_ndcg10="0.0985")
        assert bar.n == 3000
    (line,) = [r.getMessage() for r in caplog.records]  # quicker than every_s: only the last line
    assert line.startswith("replay -> clickstream: done 3000/3000 ev") and line.endswith("valid_ndcg10=0.0985")


def test_disabled_reports_nothing(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: False)
    caplog.set_level(logging.INFO, logger="fusionrec.progress")
    assert list(progress(range(5), desc="x", enabled=False)) == list(range(5))
    assert not caplog.records


def test_a_terminal_gets_a_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress_mod.sys.stderr, "isatty", lambda: True)
    bar = progress(range(3), desc="x")
    assert not isinstance(bar, LogProgress) and list(bar) == [0, 1, 2]
