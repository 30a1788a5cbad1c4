"""The user's own models: from a file, a module path or an entry point; identified by their code."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest
from typer.testing import CliRunner

import ablate
from ablate import plugins
from ablate.cli import app
from ablate.config import ConfigError
from ablate.models import list_models, resolve_args
from ablate.models.registry import code_hash, origin
from ablate.results import study_variants
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.store import Store
from ablate.studies import StudyError, expand, load

ASSET = Path(__file__).parent / "assets" / "plugins" / "tinynet.py"

STUDY = """
description = "a user's model over one of its arguments"
plugins = [{plugins}]
seeds = {seeds}
[base]
epochs = 1
batch_size = 64
train_subset = 128
data = {{ dataset = "synthetic" }}
model = {{ name = "{model}", width = 4 }}
[axes]
"model.extra" = [0, 1]
"""


def write_study(where: Path, plugins_=("tinynet.py",), model="tinynet", seeds=1, name="mine") -> Path:
    path = where / f"{name}.toml"
    path.write_text(STUDY.format(plugins=", ".join(f'"{p}"' for p in plugins_), model=model, seeds=seeds))
    return path


def quiet() -> QuietReporter:
    return QuietReporter(lambda _: None)


def finished(db: Path) -> list[tuple]:
    with closing(sqlite3.connect(db)) as conn:
        return conn.execute("SELECT label, seed, status, config_hash FROM runs ORDER BY id").fetchall()


def test_a_plugin_file_next_to_the_study_trains_alone_and_fused(tmp_path):
    shutil.copy(ASSET, tmp_path / "tinynet.py")
    study = write_study(tmp_path, seeds=2)
    assert load(study).plugins == (str((tmp_path / "tinynet.py").resolve()),)
    assert origin("tinynet") == str((tmp_path / "tinynet.py").resolve())
    run_study(str(study), db=str(tmp_path / "alone.db"), reporter=quiet(), device="cpu", fuse=1)
    run_study(str(study), db=str(tmp_path / "fused.db"), reporter=quiet(), device="cpu", fuse=2)
    for db in ("alone.db", "fused.db"):
        rows = finished(tmp_path / db)
        assert [r[2] for r in rows] == ["complete"] * 4, rows
    # An argument that may be 0 by its own declaration is accepted at 0, and refused below.
    assert resolve_args("tinynet", {"extra": 0})["extra"] == 0
    with pytest.raises(ConfigError, match="model.extra must be >= 0, got -1"):
        resolve_args("tinynet", {"extra": -1})


def test_an_undeclared_argument_gets_only_its_type_checked(tmp_path):
    (tmp_path / "loose.py").write_text(
        "from torch import nn\nfrom ablate.models import register_model\n\n"
        "@register_model\ndef loosenet(num_classes: int = 10, blocks: int = 1) -> nn.Module:\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, num_classes))\n"
    )
    plugins.load([str(tmp_path / "loose.py")])
    assert resolve_args("loosenet", {"blocks": 0}) == {"blocks": 0}  # the built-in width rule is not its rule
    with pytest.raises(ConfigError, match="model.blocks must be an integer"):
        resolve_args("loosenet", {"blocks": "two"})


def test_ranges_given_to_register_model(tmp_path):
    (tmp_path / "ranged.py").write_text(
        "from torch import nn\nfrom ablate.models import register_model\n\n"
        "@register_model(ranges={'p': (0.0, 0.5)})\ndef rangednet(num_classes: int = 10, p: float = 0.1):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Dropout(p), nn.Linear(3 * 32 * 32, num_classes))\n"
    )
    plugins.load([str(tmp_path / "ranged.py")])
    with pytest.raises(ConfigError, match=r"model.p must be in \[0.0, 0.5\], got 0.7"):
        resolve_args("rangednet", {"p": 0.7})


def test_a_plugin_by_module_path(tmp_path, monkeypatch):
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "models.py").write_text(ASSET.read_text().replace("def tinynet", "def modnet"))
    monkeypatch.syspath_prepend(str(tmp_path))
    study = write_study(tmp_path, plugins_=("mypkg.models",), model="modnet")
    run_study(str(study), db=str(tmp_path / "r.db"), reporter=quiet(), device="cpu", fuse=1)
    assert [r[2] for r in finished(tmp_path / "r.db")] == ["complete"] * 2
    assert origin("modnet").endswith("models.py")


def test_a_plugin_by_entry_point_is_identified_by_its_package_version(tmp_path, monkeypatch):
    package = tmp_path / "eppkg"
    package.mkdir()
    (package / "__init__.py").write_text(ASSET.read_text().replace("def tinynet", "def epnet"))
    monkeypatch.syspath_prepend(str(tmp_path))

    class Dist:
        name, version = "eppkg", "1.2.0"

    point = importlib.metadata.EntryPoint("epnet", "eppkg", plugins.GROUP)
    point = point._for(Dist()) if hasattr(point, "_for") else point
    monkeypatch.setattr(
        plugins.importlib.metadata, "entry_points", lambda group=None: [point] if group == plugins.GROUP else []
    )
    monkeypatch.setattr(plugins, "_entry_points_done", False)
    assert "epnet" in list_models()
    assert origin("epnet") == code_hash("epnet") == "eppkg==1.2.0"
    study = write_study(tmp_path, plugins_=(), model="epnet")
    run_study(str(study), db=str(tmp_path / "r.db"), reporter=quiet(), device="cpu", fuse=1)
    assert [r[2] for r in finished(tmp_path / "r.db")] == ["complete"] * 2


def test_an_edited_model_file_is_a_new_variant_and_a_moved_one_is_not(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    source = ASSET.read_text().replace("def tinynet", "def editnet")
    (tmp_path / "a" / "net.py").write_text(source)
    db = str(tmp_path / "r.db")
    study_a = write_study(tmp_path / "a", plugins_=("net.py",), model="editnet")
    run_study(str(study_a), db=db, reporter=quiet(), device="cpu", fuse=1)
    # The same file under another path: the same code, the same runs, nothing trained again.
    (tmp_path / "b" / "net.py").write_text(source)
    study_b = write_study(tmp_path / "b", plugins_=("net.py",), model="editnet")
    plugins._loaded.clear()  # a new process, as a second `ablate run` would be
    summary = run_study(str(study_b), db=db, reporter=quiet(), device="cpu", fuse=1)
    assert summary.skipped == 2 and not summary.counts
    # An edit to the model's code: new runs, of a new variant, not more seeds of the old one.
    (tmp_path / "b" / "net.py").write_text(source.replace("nn.ReLU()", "nn.GELU()"))
    plugins._loaded.clear()
    summary = run_study(str(study_b), db=db, reporter=quiet(), device="cpu", fuse=1)
    assert summary.counts == {"complete": 2}
    store = Store.open(db)
    try:
        found = study_variants(store, "mine")
    finally:
        store.close()
    assert len(found) == 2
    assert all(v.points == 2 and v.seeds() == (1, 1) for v in found)
    assert {len(set(v.runs["config_hash"])) for v in found} == {2}


def test_a_study_naming_a_missing_plugin_or_an_unknown_figure_is_refused(tmp_path):
    study = write_study(tmp_path, plugins_=("nowhere.py",))
    with pytest.raises(StudyError, match="plugin file 'nowhere.py' does not exist"):
        load(study)
    shutil.copy(ASSET, tmp_path / "tinynet.py")
    bad = write_study(tmp_path, name="fig")
    bad.write_text("figures = [13]\n" + bad.read_text())
    with pytest.raises(StudyError, match="figures: no figure 13"):
        load(bad)


def test_the_command_line_takes_plugin_files(tmp_path):
    shutil.copy(ASSET, tmp_path / "net.py")
    source = (tmp_path / "net.py").read_text().replace("def tinynet", "def clinet")
    (tmp_path / "net.py").write_text(source)
    study = write_study(tmp_path, plugins_=(), model="clinet")
    runner = CliRunner()
    result = runner.invoke(app, ["models", "--json", "--plugin", str(tmp_path / "net.py")])
    assert result.exit_code == 0, result.output
    row = next(r for r in json.loads(result.output) if r["name"] == "clinet")
    assert row["origin"] == str((tmp_path / "net.py").resolve()) and row["params"] == 162
    result = runner.invoke(
        app, ["run", str(study), "--plugin", str(tmp_path / "net.py"), "--db", str(tmp_path / "c.db")]
    )
    assert result.exit_code == 0, result.output
    assert [r[2] for r in finished(tmp_path / "c.db")] == ["complete"] * 2


def test_a_plugin_that_fails_to_import_is_one_line(tmp_path):
    (tmp_path / "broken.py").write_text("raise RuntimeError('no such layer')\n")
    result = CliRunner().invoke(app, ["models", "--plugin", str(tmp_path / "broken.py")])
    assert result.exit_code == 2
    assert "failed to load: RuntimeError: no such layer" in result.output
    assert "Traceback" not in result.output


def test_each_run_records_the_code_that_trained_it_and_status_names_a_mix(tmp_path):
    shutil.copy(ASSET, tmp_path / "tinynet.py")
    study = write_study(tmp_path, seeds=2)
    db = tmp_path / "r.db"
    run_study(str(study), db=str(db), reporter=quiet(), device="cpu", fuse=1)
    with closing(sqlite3.connect(db)) as conn:
        versions = {v for (v,) in conn.execute("SELECT code_version FROM runs")}
    assert versions == {f"tinynet.py:{code_hash('tinynet')}"}
    # A built-in model: ablate's version and its module's hash, and none of it in the config hash.
    builtin = tmp_path / "builtin.toml"
    builtin.write_text(
        STUDY.format(plugins="", model="plain_cnn", seeds=2).replace('"model.extra" = [0, 1]', '"model.depth" = [1]')
    )
    assert all(p.config.code == "" for p in expand(load(builtin)))
    run_study(str(builtin), db=str(db), reporter=quiet(), device="cpu", fuse=1)
    with closing(sqlite3.connect(db)) as conn:
        rows = conn.execute(
            "SELECT r.id, r.code_version, r.config_json FROM runs r JOIN studies s ON s.id = r.study_id "
            "WHERE s.name = 'builtin' ORDER BY r.id"
        ).fetchall()
        assert {r[1] for r in rows} == {f"ablate {ablate.__version__} plain_cnn.py:{code_hash('plain_cnn')}"}
        assert {json.loads(r[2])["code"] for r in rows} == {""}
        # Seed 1 trained by another ablate: the same config, two versions of the code.
        conn.execute(
            "UPDATE runs SET code_version = 'ablate 0.0.9 plain_cnn.py:0123456789abcdef' WHERE id = ?", (rows[1][0],)
        )
        conn.commit()
    result = CliRunner().invoke(app, ["status", "builtin", "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "ran on 2 versions of the model's code" in " ".join(result.output.split())
    quiet_result = CliRunner().invoke(app, ["status", "mine", "--db", str(db)])
    assert "versions of the model's code" not in quiet_result.output


def test_spawned_workers_packed_two_to_a_device_load_the_plugin(tmp_path):
    shutil.copy(ASSET, tmp_path / "tinynet.py")
    study = write_study(tmp_path, seeds=1)
    summary = run_study(
        str(study), db=str(tmp_path / "p.db"), reporter=quiet(), device="cpu", per_gpu=2, processes=True, fuse=1
    )
    assert summary.ok and summary.counts == {"complete": 2}
    with closing(sqlite3.connect(tmp_path / "p.db")) as conn:
        assert {v for (v,) in conn.execute("SELECT code_version FROM runs")} == {f"tinynet.py:{code_hash('tinynet')}"}


def test_shipped_plugin_source_loads_where_its_path_does_not_exist(tmp_path):
    source = ASSET.read_text().replace("def tinynet", "def shippednet").encode()
    (tmp_path / "ship.py").write_bytes(source)
    plugins.load([str(tmp_path / "ship.py")])
    shipped = [s for s in plugins.ship() if s[0] == str((tmp_path / "ship.py").resolve())]
    assert shipped == [(str((tmp_path / "ship.py").resolve()), "ship.py", source)]
    want = code_hash("shippednet")
    # Another machine: the path is not there, and the model is not registered yet.
    from ablate.models import registry

    del registry._BUILDERS["shippednet"]
    plugins._loaded.pop(shipped[0][0])
    (tmp_path / "ship.py").unlink()
    plugins.receive([(shipped[0][0], "ship.py", source)])
    assert "shippednet" in list_models() and code_hash("shippednet") == want
    assert origin("shippednet") != shipped[0][0] and origin("shippednet").endswith("ship.py")


def test_merge_keeps_plugin_runs_code_and_identity(tmp_path):
    shutil.copy(ASSET, tmp_path / "tinynet.py")
    study = write_study(tmp_path)
    run_study(str(study), db=str(tmp_path / "a.db"), reporter=quiet(), device="cpu", fuse=1)
    result = CliRunner().invoke(app, ["merge", str(tmp_path / "a.db"), "--db", str(tmp_path / "b.db")])
    assert result.exit_code == 0, result.output
    query = "SELECT config_hash, seed, code_version, config_json, test_acc FROM runs ORDER BY config_hash"
    with closing(sqlite3.connect(tmp_path / "a.db")) as a, closing(sqlite3.connect(tmp_path / "b.db")) as b:
        assert a.execute(query).fetchall() == b.execute(query).fetchall()
    # The merged runs are the plugin study's: running it against the merged database trains nothing.
    summary = run_study(str(study), db=str(tmp_path / "b.db"), reporter=quiet(), device="cpu", fuse=1)
    assert summary.skipped == 2 and not summary.counts


def test_a_model_file_edited_after_the_plan_fails_its_points_rather_than_train_other_code(tmp_path):
    from ablate.run import execute, plan
    from ablate.store import Store as Db

    (tmp_path / "late.py").write_text(ASSET.read_text().replace("def tinynet", "def latenet"))
    study = write_study(tmp_path, plugins_=("late.py",), model="latenet")
    p = plan(str(study), device="cpu", fuse=1)
    (tmp_path / "late.py").write_text(ASSET.read_text().replace("def tinynet", "def latenet").replace("ReLU", "GELU"))
    plugins._loaded.clear()
    plugins.load([str(tmp_path / "late.py")])  # what a worker started now would import
    store = Db.open(str(tmp_path / "r.db"))
    try:
        summary = execute(store, p, quiet())
        errors = [r["error"] for r in store.runs()]
    finally:
        store.close()
    assert summary.counts == {"failed": 2}
    assert all("has another source here" in e for e in errors)
