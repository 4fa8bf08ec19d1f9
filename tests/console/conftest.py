"""Console fixtures: a real headless Chromium (never skipped: without it the tests fail naming the
apt command), the embedded demo's SQLite store, and a real `fusionrec serve` process over it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench.harness import free_port, served_api
from shopdata import Dataset, load_data, load_dataset
from streams.stores import SQLiteStore
from tests.cli import REPO, run_cli
from tests.serving.conftest import fill

SHOTS = REPO / "out" / "console"
APT = "apt-get install -y chromium chromium-driver"
ENCODER = REPO / "models" / "encoder-int8"  # where `fusionrec demo` exports the text encoder on first run


@dataclass(frozen=True)
class Served:
    base: str
    bundle: Path
    dataset: Dataset
    reports: Path


@dataclass(frozen=True)
class Demo:
    db: Path
    cache: Path
    dataset: Dataset  # the synthetic shop the demo replayed, for expectations independent of the API


def _chrome(tmp: Path) -> Any:
    browser, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.fail(f"the console tests need Chromium and its WebDriver: run `{APT}` as root", pytrace=False)
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.fail("the console tests need selenium: `.venv/bin/pip install -e '.[dev]'`", pytrace=False)
    opts = webdriver.ChromeOptions()
    opts.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1300,1000"):
        opts.add_argument(arg)
    opts.add_argument(f"--user-data-dir={tmp}")
    # the network log: every request the page makes, read back by the documented-API test
    opts.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    return webdriver.Chrome(service=Service(driver), options=opts)


@pytest.fixture(scope="session")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    driver = _chrome(tmp_path_factory.mktemp("chromium"))
    driver.set_page_load_timeout(30)
    SHOTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


@pytest.fixture(scope="session")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    """`fusionrec demo` into its own SQLite file (it also exports the encoder on a fresh clone)."""
    root = tmp_path_factory.mktemp("console-demo")
    db = root / "demo.db"
    proc = run_cli("demo", "--db", str(db), "--encoder", str(ENCODER), "--show", "0", timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return Demo(db, root / "cache", load_data(None))


def serve_args(demo: Demo) -> list[str]:
    return ["--store", f"sqlite:///{demo.db}", "--encoder", str(ENCODER), "--cache", str(demo.cache)]


@contextmanager
def console_api(args: list[str], log: Path, **serve: str) -> Iterator[str]:
    """`fusionrec serve ARGS` (bench.harness.served_api) whose `[serve]` section comes from the
    defaults and `serve` only: no FUSIONREC_SERVE__* of the caller's environment leaks in."""
    with pytest.MonkeyPatch.context() as mp:
        for key in [k for k in os.environ if k.startswith("FUSIONREC_SERVE__")]:
            mp.delenv(key)
        env = {f"FUSIONREC_SERVE__{key.upper()}": value for key, value in serve.items()}
        with served_api(args, log, free_port(), env=env) as base:
            yield base


@pytest.fixture(scope="session")
def console(demo: Demo, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API (and so the console) over the demo store, with no worker metrics configured."""
    with console_api(serve_args(demo), tmp_path_factory.mktemp("console-serve") / "serve.log") as base:
        yield base


def metrics_urls_env(urls: list[str]) -> str:
    """`serve.worker_metrics_urls` as its environment variable holds it: a JSON list."""
    return json.dumps(urls)


def _report_plot(path: Path) -> None:
    """A PNG as `fusionrec evaluate --report` writes them (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([5, 10, 20], [0.11, 0.18, 0.27], marker="o")
    ax.set_title("recall@k (test split)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


@pytest.fixture(scope="session")
def bundle_console(tiny_bundle: Path, shop_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """The API over a trained bundle (variant, validation metrics, personal search), a store the
    pipeline filled with that bundle's lists, and a report folder with one plot."""
    root = tmp_path_factory.mktemp("console-bundle")
    shop = load_dataset(shop_dir)
    store = SQLiteStore(root / "lists.db")
    store.setup()
    try:
        fill(store, shop, tiny_bundle)
    finally:
        store.close()
    reports = root / "reports"
    reports.mkdir()
    _report_plot(reports / "recall.png")
    args = ["--bundle", str(tiny_bundle), "--store", f"sqlite:///{root / 'lists.db'}", "--cache", str(root / "cache")]
    with console_api(args, root / "serve.log", reports_dir=str(reports)) as base:
        yield Served(base, tiny_bundle, shop, reports)
