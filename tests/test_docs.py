"""Every command has help text and is documented in the README (after sqlite-utils)."""

import re
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from ablate.cli import app

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()
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


def test_the_readmes_first_steps_leave_a_clone_as_it_was(tmp_path):
    """A newcomer's first commands write only where .gitignore says (the committed results.db
    and reports/ are the project's record)."""
    steps = re.search(r"^First steps:.*?```\n(.*?)```", README, re.S | re.M).group(1).splitlines()
    assert steps[0].startswith("ablate run smoke") and any(s.startswith("ablate report") for s in steps)
    shutil.copy(ROOT / ".gitignore", tmp_path)
    (tmp_path / "results.db").write_bytes(b"the committed record")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "clone"]):
        subprocess.run(git + args, cwd=tmp_path, check=True)
    for step in steps:
        args = shlex.split(step)[1:]
        if args[0] == "run":  # smaller, not elsewhere: where it writes is the README's
            args += ["--device", "cpu", "--epochs", "1", "--set", "train_subset=64", "--set", "model.width=4"]
        result = CliRunner().invoke(app, args, catch_exceptions=False)
        assert result.exit_code == 0, (step, result.output)
    assert list((tmp_path / "scratch").glob("figure-00.*"))  # the steps did draw something
    status = subprocess.run(
        git + ["status", "--porcelain", "--untracked-files=all"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert status.stdout == ""
