"""cli.COMMANDS is the one list of commands: each entry's module adds its own options and holds its function, and
`multibox --help` lists them all without importing torch."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from multibox.cli import COMMANDS, parse_args


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_adds_its_options_and_has_its_function(name, capsys):
    module, function = COMMANDS[name][0].split(":")
    loaded = importlib.import_module(f"multibox.commands.{module}")
    assert callable(getattr(loaded, function)) and callable(loaded.add_arguments)
    with pytest.raises(SystemExit) as stop:
        parse_args([name, "--help"])
    assert stop.value.code == 0
    shown = capsys.readouterr().out
    assert shown.startswith(f"usage: multibox {name}") and "--help" in shown


def test_options_of_one_command_are_not_taken_by_another():
    assert parse_args(["predict", "--weights", "a.ckpt", "--source", "x", "--out", "y", "--conf", "0.5"]).conf == 0.5
    with pytest.raises(SystemExit):
        parse_args(["train", "-c", "c.yaml", "--source", "x"])  # a predict option


def test_top_level_help_lists_every_command_without_importing_torch():
    code = (
        "import sys, contextlib, io\n"
        "from multibox.cli import parse_args\n"
        "out = io.StringIO()\n"
        "with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):\n"
        "    parse_args(['--help'])\n"
        "print(out.getvalue())\n"
        "print('torch' in sys.modules)\n"
    )
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    for name, (_, help_text) in COMMANDS.items():
        assert name in shown and help_text.split()[0] in shown
    assert shown.strip().splitlines()[-1] == "False"
