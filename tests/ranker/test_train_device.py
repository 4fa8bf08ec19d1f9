"""Where training runs: --device auto/cpu/cuda resolved once, a clear error for cuda without a GPU,
and the choice recorded in the bundle's manifest. (The CUDA path itself is run on a GPU machine by
bench/gpu.py and `fusionrec train --device cuda`; CI has none.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from ranker.train import resolve_device
from tests.cli import assert_error, run_cli


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    assert resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"
    assert resolve_device("cuda") == "cuda"
    assert resolve_device("cpu") == "cpu"  # asked for: the GPU is left alone


def test_cuda_without_a_gpu_and_unknown_devices_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"--device cuda: .*(sees no GPU|CPU-only build)"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match=r"device must be one of auto, cpu, cuda, not 'tpu'"):
        resolve_device("tpu")


def test_train_cli_says_why_it_cannot_train_on_cuda(shop_dir: Path, tmp_path: Path) -> None:
    # no GPU visible to the child, whatever this machine has: the refusal comes before any work
    proc = run_cli(
        "train",
        "--data",
        str(shop_dir),
        "--out",
        str(tmp_path / "b"),
        "--device",
        "cuda",
        env={"CUDA_VISIBLE_DEVICES": ""},
    )
    assert_error(proc, "--device cuda:", "use --device auto or cpu")
    assert not (tmp_path / "b").exists()


def test_the_manifest_records_where_torch_trained(bundles: list[Path]) -> None:
    manifest = json.loads((bundles[0] / "manifest.json").read_text())
    assert manifest["train"]["device"] == "cpu"
