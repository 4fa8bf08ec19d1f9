"""Bad settings and options, as a person gives them to the CLI: one `error:` line, exit 2, no traceback.

(Bad dataset files: tests/unit/test_bad_data_files.py; bad models and bundles: tests/unit/test_bad_models.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli import assert_error, run_cli


@pytest.fixture
def toml(tmp_path: Path) -> Path:
    return tmp_path / "fusionrec.toml"


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[kafka\nbootstrap = 1\n", ("not valid TOML", "fusionrec.toml")),
        ('[kafka]\npartitions = "four"\n', ("kafka.partitions", "valid integer")),
        ('[cassandar]\nhosts = ["127.0.0.1"]\n', ("cassandar", "unknown setting")),
        ("[worker]\nbatch_sise = 10\n", ("worker.batch_sise", "unknown setting")),
    ],
    ids=["malformed-toml", "wrong-type", "unknown-section", "unknown-key"],
)
def test_bad_settings_file(toml: Path, text: str, needles: tuple[str, ...]) -> None:
    toml.write_text(text)
    assert_error(run_cli("recommend", "U1", "--store", "sqlite:///x.db", cwd=toml.parent), *needles)


def test_config_env_naming_a_missing_file(tmp_path: Path) -> None:
    proc = run_cli("recommend", "U1", env={"FUSIONREC_CONFIG": str(tmp_path / "missing.toml")})
    assert_error(proc, "FUSIONREC_CONFIG", "missing.toml", "no such file")


def test_wrong_typed_environment_variable(tmp_path: Path) -> None:
    proc = run_cli("demo", "--db", str(tmp_path / "d.db"), env={"FUSIONREC_DEMO__K": "ten"})
    assert_error(proc, "demo.k", "FUSIONREC_DEMO__K")


def test_reading_a_store_that_does_not_exist_creates_nothing(tmp_path: Path) -> None:
    assert_error(run_cli("recommend", "U1", "--store", f"sqlite:///{tmp_path}/typo.db"), "typo.db")
    assert list(tmp_path.iterdir()) == []


def test_unknown_store_scheme() -> None:
    assert_error(run_cli("recommend", "U1", "--store", "redis://x"), "redis://x")


def test_bad_option_value_names_the_option() -> None:
    assert_error(run_cli("export-encoder", "--out", "x", "--variant", "fp64"), "--variant", "fp64")


def test_bundle_pointing_at_a_folder_that_is_not_a_bundle(tmp_path: Path) -> None:
    proc = run_cli("serve", "--bundle", str(tmp_path), "--store", "memory://")
    assert_error(proc, str(tmp_path))


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    proc = run_cli("--debug", "recommend", "U1", env={"FUSIONREC_CONFIG": str(tmp_path / "missing.toml")})
    assert proc.returncode == 2 and "Traceback" in proc.stderr and "error: " in proc.stderr
