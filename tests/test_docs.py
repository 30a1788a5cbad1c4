"""Every command has help text and is documented in the README (after sqlite-utils)."""

from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from ablate.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text()
COMMANDS = sorted(get_command(app).commands)


def test_the_commands_are_the_documented_set():
    assert COMMANDS == ["compare", "export", "merge", "models", "report", "run", "status", "studies"]


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    result = CliRunner().invoke(app, [name, "--help"])
    assert result.exit_code == 0
    assert len(get_command(app).commands[name].help or "") > 20


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_is_in_the_readme(name):
    assert f"ablate {name}" in README


def test_readme_names_install_and_test_commands():
    assert 'pip install -e ".[dev]"' in README and "\npytest" in README


def test_every_option_of_ablate_run_is_in_the_readme():
    study = get_command(app).commands["run"].get_command(None, "smoke")
    options = [o for p in study.params for o in p.opts if o.startswith("--") and o != "--help"]
    assert options and [o for o in options if f"`{o}" not in README] == []


@pytest.mark.parametrize("name", ["status", "report", "export", "compare", "merge"])
def test_every_option_of_the_other_commands_is_in_the_readme(name):
    command = get_command(app).commands[name]
    options = [o for p in command.params for o in p.opts if o.startswith("--") and o != "--help"]
    assert options and [o for o in options if f"`{o}" not in README] == []


def test_every_option_of_ablate_run_all_is_in_the_readme():
    command = get_command(app).commands["run"].get_command(None, "all")
    options = [o for p in command.params for o in p.opts if o.startswith("--") and o != "--help"]
    assert options and [o for o in options if f"`{o}" not in README] == []
