"""The command line imports only the module of the command a run names (`fusionrec.cli.build_app`):
every command is in its map, a run of one command leaves the others' modules unimported, and the full
list still answers help and a mistyped name."""

from __future__ import annotations

import subprocess
import sys

import typer

from fusionrec.cli import COMMANDS, build_app
from tests.cli import REPO, run_cli


def _names(cli: typer.Typer) -> list[str]:
    group = typer.main.get_command(cli)
    return sorted(getattr(group, "commands", {}))


def test_every_command_is_mapped_to_the_module_that_registers_it() -> None:
    assert _names(build_app()) == sorted(COMMANDS)
    for command, module in COMMANDS.items():
        mine = _names(build_app([command]))
        assert command in mine
        assert mine == sorted(c for c, m in COMMANDS.items() if m == module)


def test_a_worker_run_imports_no_other_commands_module() -> None:
    code = (
        "import sys; from fusionrec.cli import build_app; build_app(['--debug', 'worker', '--help']); "
        "print(sorted(m for m in sys.modules if m.startswith(('fusionrec.commands.', 'ranker.evaluate', 'serving.q'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "['fusionrec.commands.context', 'fusionrec.commands.stream']"


def test_help_lists_every_command_and_a_mistyped_one_is_named() -> None:
    listed = run_cli("--help", timeout=120)
    assert listed.returncode == 0
    assert all(command in listed.stdout for command in COMMANDS)
    wrong = run_cli("wroker", timeout=120)
    assert wrong.returncode == 2 and "error: No such command 'wroker'" in wrong.stderr
