"""The worker imports faust without aiohttp (streams.faust_import), and aiohttp imported after is the
real one. Each case runs in a fresh interpreter: what is imported is the point."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli import REPO


def _run(code: str, modules: Path | None = None) -> str:
    """`code` in a fresh interpreter in the repository (and `modules` on its path); its stdout."""
    env = dict(os.environ)
    if modules:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(modules), env.get("PYTHONPATH")]))
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_worker_s_faust_comes_without_aiohttp_and_aiohttp_after_is_the_real_one() -> None:
    out = _run(
        """
        import sys
        import streams.faust_worker
        from faust.types.web import HttpClientT
        from streams.faust_import import NoHttpClient
        assert "aiohttp" not in sys.modules and "aiohttp.client" not in sys.modules
        assert HttpClientT is NoHttpClient  # faust's type alias: the one name it read
        import aiohttp.client
        assert aiohttp.client.ClientSession is not NoHttpClient
        assert hasattr(aiohttp, "ClientTimeout") and aiohttp.__file__
        print("ok")
        """
    )
    assert out.strip() == "ok"


def test_a_worker_s_app_never_imports_aiohttp(tmp_path: Path) -> None:
    """faust's HttpClient setting defaults to aiohttp's class path, resolved when an app is made."""
    out = _run(
        f"""
        import sys, threading
        from types import SimpleNamespace
        from streams.faust_worker import build_app
        from streams.faust_import import NoHttpClient
        from streams.settings import KafkaSettings, WorkerSettings
        pipeline = SimpleNamespace(state_cache=None, ranker=None, prepare=None, write=None)
        app = build_app(KafkaSettings(topic="t", dead_letter_topic="t.dlq", items_topic=""), WorkerSettings(),
                        pipeline, threading.Event(), datadir={str(tmp_path)!r})
        assert app.conf.HttpClient is NoHttpClient
        assert "aiohttp" not in sys.modules
        try:
            app.http_client
        except RuntimeError as exc:
            print(exc)
        """
    )
    assert "has no HTTP client" in out


def test_a_faust_that_reads_more_of_aiohttp_is_imported_the_plain_way(tmp_path: Path) -> None:
    """A module that needs more of aiohttp than the stand-in has: forgotten, imported again plainly."""
    (tmp_path / "needs_more.py").write_text("from aiohttp.client import ClientTimeout\nTIMEOUT = ClientTimeout\n")
    (tmp_path / "binds_aiohttp.py").write_text("import aiohttp\nMODULE = aiohttp\n")  # imported before the failure
    (tmp_path / "plain.py").write_text("import builtins\nbuiltins.__dict__.setdefault('plain_runs', []).append(1)\n")
    out = _run(
        """
        import sys
        import numpy
        from streams.faust_import import import_faust
        stood_in = import_faust(("faust", "plain", "binds_aiohttp", "needs_more"))
        import aiohttp, binds_aiohttp, needs_more
        assert needs_more.TIMEOUT is aiohttp.ClientTimeout
        assert binds_aiohttp.MODULE is aiohttp  # imported again: it had bound the stand-in
        assert plain_runs == [1]  # kept: it held nothing of the stand-in (an extension could not load twice)
        assert sys.modules["numpy"] is numpy
        print(stood_in, sys.modules["aiohttp"].__file__ is not None)
        """,
        tmp_path,
    )
    assert out.split() == ["False", "True"]


@pytest.mark.parametrize("first", ["aiohttp", "json"])
def test_aiohttp_imported_already_is_left_alone(first: str) -> None:
    out = _run(
        f"""
        import sys, {first}
        from streams.faust_import import import_faust
        print(import_faust(), "aiohttp" in sys.modules)
        """
    )
    assert out.split() == (["False", "True"] if first == "aiohttp" else ["True", "False"])
