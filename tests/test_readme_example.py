"""The README's "Ablate your own model", run exactly as written: its model file, its study
file and its commands, on a small five-class image-folder set made here."""

from __future__ import annotations

import re
import shlex
import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from typer.testing import CliRunner

from ablate.cli import app

README = (Path(__file__).parent.parent / "README.md").read_text()


def example() -> tuple[str, str, list[str]]:
    section = README.split("### Ablate your own model", 1)[1].split("\n### ", 1)[0]
    (model,) = re.findall(r"```python\n(.*?)```", section, re.S)
    (study,) = re.findall(r"```toml\n(.*?)```", section, re.S)
    (commands,) = re.findall(r"```bash\n(.*?)```", section, re.S)
    return model, study, [line for line in commands.splitlines() if line.strip()]


def five32(root: Path, per_class=(8, 4)) -> None:
    rng = np.random.default_rng(0)
    for split, n in zip(("train", "test"), per_class):
        for c in range(5):
            folder = root / split / f"class{c}"
            folder.mkdir(parents=True)
            for i in range(n):
                image = np.full((32, 32, 3), 40 * c, np.uint8) + rng.integers(0, 60, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(image).save(folder / f"{i}.png")


def test_the_readme_example_runs_as_written(tmp_path):
    model, study, commands = example()
    assert len(model.strip().splitlines()) <= 22  # "a 20-line model file"
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "mynet.py").write_text(model)
    (tmp_path / "mystudy.toml").write_text(study)
    five32(tmp_path / "five32")
    runner = CliRunner()
    assert [c.split()[:2] for c in commands] == [["ablate", "run"], ["ablate", "report"]]
    for command in commands:
        result = runner.invoke(app, shlex.split(command)[1:])
        assert result.exit_code == 0, (command, result.output)
    with closing(sqlite3.connect(tmp_path / "results.db")) as conn:
        runs = conn.execute("SELECT status, data_name, code_version FROM runs").fetchall()
    assert len(runs) == 8 and {r[0] for r in runs} == {"complete"}
    assert {r[1] for r in runs} == {"image folders 'five32': 5 classes, 32x32, 40 / 20 images"}
    assert {r[2].split(":")[0] for r in runs} == {"mynet.py"}
    reports = tmp_path / "reports"
    assert (reports / "study-mystudy.png").stat().st_size > 10_000
    plotted = pd.read_csv(reports / "study-mystudy.csv")
    assert len(plotted) == 4 and set(plotted["n"]) == {2} and plotted["mean"].between(0, 1).all()
    assert "![Study mystudy](study-mystudy.png)" in (reports / "README.md").read_text()
