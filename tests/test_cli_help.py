"""What a newcomer meets first (issue 14, items 12, 13, 15): help that shows every [...] of
its source, --version, a per-point `ablate status STUDY`, exit codes that agree, and
`compare` that picks a one-axis study's axis."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

import ablate
from ablate.cli import app

ASSETS = Path(__file__).parent / "assets"
FAST = ("--device", "cpu", "--set", "train_subset=64", "--set", "model.width=4")


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


def _commands():
    """(argument path, click command) of every command, the study command `run smoke` too."""
    root = typer.main.get_command(app)
    ctx = click.Context(root)
    for name in root.list_commands(ctx):
        cmd = root.get_command(ctx, name)
        yield [name], cmd
        if name == "run":
            yield ["run", "smoke"], cmd.get_command(click.Context(cmd), "smoke")


def _shown(text: str) -> str:
    """Help as a reader sees it: no panel borders, one space between words."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


def _bracketed(text: str) -> list[str]:
    """Each [...] of a help text with the word it is attached to: [study default: 1], "ablate[ray]."""
    return [" ".join(m.split()) for m in re.findall(r'[\w"]*\[[^\[\]]*\]', text.replace("\\[", "["))]


def test_help_shows_every_bracket_of_its_source():
    checked = 0
    for path, cmd in _commands():
        shown = _shown(invoke(*path, "--help").output)
        texts = [cmd.help or ""] + [getattr(p, "help", None) or "" for p in cmd.params]
        for fragment in (f for t in texts for f in _bracketed(t)):
            assert fragment in shown, (path, fragment, shown)
            checked += 1
    assert checked >= 6  # [study default: N], "ablate[ray], [default: ...] of --db, --per-gpu, --address, --variant


def test_a_study_description_keeps_its_brackets(tmp_path):
    (tmp_path / "studies").mkdir()
    (tmp_path / "studies" / "mine.toml").write_text(
        'description = "Depth [after the report, section 4.3]"\n[base]\nepochs = 1\n[axes]\n"model.depth" = [1, 2]\n'
    )
    for args in (["run", "--help"], ["run", "mine", "--help"]):
        assert "Depth [after the report, section 4.3]" in _shown(invoke(*args).output), args


# --------------------------------------------------------------------------- item 13


def test_version():
    result = invoke("--version")
    assert result.exit_code == 0 and result.output.strip() == f"ablate {ablate.__version__}"


@pytest.fixture(scope="module")
def smoke_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("help") / "smoke.db"
    assert invoke("run", "smoke", "--db", path, "--epochs", "2", "--seeds", "2", *FAST).exit_code == 0
    assert invoke("run", "smoke", "--db", path, "--epochs", "1", *FAST).exit_code == 0  # a second variant
    return path


def test_status_of_a_study_is_a_table_of_its_points(smoke_db):
    result = invoke("status", "smoke", "--db", smoke_db)
    assert result.exit_code == 0, result.output
    out = result.output
    assert "variant(s)" in out  # the variants stay listed
    for header in ("model.depth", "model.activation", "seed", "status", "epochs", "test acc", "time"):
        assert header in out, (header, out)
    rows = [line for line in out.splitlines() if re.search(r"\b(relu|gelu)\b.*\bcomplete\b", line)]
    assert len(rows) == 8  # the default variant: 4 points x 2 seeds, each with 2/2 epochs
    assert all("2/2" in r for r in rows)
    # accuracies in percent, as the reports print them
    data = json.loads(invoke("status", "smoke", "--db", smoke_db, "--json").output)
    accs = {f"{100 * p['test_acc']:.2f}%" for p in data["studies"][0]["points"] if p["test_acc"] is not None}
    assert accs and all(any(a in r for r in rows) for a in accs)


def test_status_of_a_study_takes_variant(smoke_db):
    result = invoke("status", "smoke", "--db", smoke_db, "--variant", "epochs=1")
    rows = [line for line in result.output.splitlines() if re.search(r"\b(relu|gelu)\b.*\bcomplete\b", line)]
    assert result.exit_code == 0 and len(rows) == 4 and all("1/1" in r for r in rows), result.output
    data = json.loads(invoke("status", "smoke", "--db", smoke_db, "--json").output)
    (study,) = data["studies"]
    assert len(study["points"]) == 8 and {"seed", "status", "epochs_done", "test_acc", "wall_s", "axes"} <= set(
        study["points"][0]
    )


def test_status_of_an_unknown_study_exits_2(smoke_db):
    for command in (["status", "nosuch"], ["export", "nosuch", "--out", "-"], ["compare", "nosuch", "--by", "x"]):
        result = invoke(*command, "--db", smoke_db)
        assert result.exit_code == 2, (command, result.output)
        assert result.output.startswith("error: ") and "nosuch" in result.output


# --------------------------------------------------------------------------- item 15


def test_compare_uses_the_axis_of_a_one_axis_study(tmp_path):
    study = tmp_path / "one.toml"
    study.write_text(
        (Path(__file__).parent.parent / "studies" / "smoke.toml")
        .read_text()
        .replace('"model.activation" = ["relu", "gelu"]\n', "")
        .replace('name = "smoke"', "")
    )
    db = tmp_path / "r.db"
    assert invoke("run", study, "--db", db, "--epochs", "1", "--seeds", "2", *FAST).exit_code == 0
    result = invoke("compare", "one", "--db", db)
    assert result.exit_code == 0, result.output
    assert "model.depth" in result.output


def test_compare_without_by_lists_the_axes(smoke_db):
    result = invoke("compare", "smoke", "--db", smoke_db)
    assert result.exit_code == 2
    (line,) = [line for line in result.output.splitlines() if line.strip()]
    assert line.startswith("error: ") and "--by" in line and "model.depth" in line and "model.activation" in line


# --------------------------------------------------------------------------- item 17


def test_data_given_to_a_synthetic_study_is_said_to_be_ignored(tmp_path):
    result = invoke("run", "smoke", "--db", tmp_path / "r.db", "--data", tmp_path, "--dry-run")
    assert result.exit_code == 0, result.output
    assert "note: study 'smoke' trains on synthetic data; --data is ignored" in result.output


def test_a_failed_offline_run_leaves_no_database(tmp_path, monkeypatch):
    import urllib.error

    import torchvision.datasets.utils

    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setenv("ABLATE_DATA", str(tmp_path / "cache"))
    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", offline)
    result = invoke("run", "depth", "--epochs", "1")  # the default database: ./results.db
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "cannot download CIFAR-10" in lines[0], result.output
    assert not (tmp_path / "results.db").exists()


def test_the_readme_says_what_the_report_is_without_pointing_outside_the_repository():
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    assert "../shared" not in readme
    assert "Report for PJ2" in readme
    for result in ("92%", "95.65%", "94.89%", "91.27%"):
        assert result in readme
    assert "pip install torch torchvision --index-url https://download.pytorch.org/whl/cpu" in readme


# ------------------------------------------------------------------ issue 20, item 16


def test_studies_at_80_columns_never_cuts_a_name():
    names = [s["name"] for s in json.loads(invoke("studies", "--json").output)]
    result = CliRunner().invoke(app, ["studies"], env={"COLUMNS": "80"}, catch_exceptions=False)
    lines = result.output.splitlines()
    assert result.exit_code == 0 and max(map(len, lines)) <= 80
    first = [line.split()[0] for line in lines if line.strip() and not line.startswith("  ")]
    assert [n for n in names if n not in first] == [] and "…" not in result.output
    assert len(lines) < 6 * len(names)  # a few lines a study: its values are summed up, not listed as tables


def test_help_flows_its_sentences_and_shows_flags_without_a_type():
    root = typer.main.get_command(app)
    commands = list(_commands()) + [
        (["run", "all"], root.get_command(click.Context(root), "run").get_command(click.Context(root), "all"))
    ]
    for path, cmd in [([], root)] + commands:
        text = cmd.help or ""
        # A line break inside a paragraph is kept by the rich help: the sentence breaks there.
        assert all("\n" not in p.strip("\n") for p in text.split("\n\n")), (path, text)
        shown = CliRunner().invoke(app, [*path, "--help"], env={"COLUMNS": "80"}).output
        assert "<bool>" not in shown and "--help" in shown, (path, shown)
