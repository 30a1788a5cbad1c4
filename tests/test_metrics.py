"""Losses and evaluated metrics by name: focal loss and the built-in metrics against values
computed by hand on fixed logits; metrics recorded per epoch and taken by compare and claims."""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing

import pytest
import torch
from typer.testing import CliRunner

from ablate import claims, metrics
from ablate.cli import app
from ablate.config import ConfigError, LossCfg, from_dict
from ablate.loss import FocalLoss, build_loss, register_loss
from ablate.run import run_study
from ablate.scheduler import QuietReporter
from ablate.studies import expand, parse

# Three classes, six images: predictions 0,0,1,1,2,0 for labels 0,1,1,2,2,0.
LOGITS = torch.tensor(
    [
        [2.0, 0.0, 0.0],
        [1.0, 0.5, 0.0],
        [0.0, 3.0, 0.0],
        [0.0, 1.0, 0.5],
        [0.0, 0.0, 4.0],
        [0.2, 0.1, 0.0],
    ],
    dtype=torch.float64,
)
LABELS = torch.tensor([0, 1, 1, 2, 2, 0])


def test_the_built_in_metrics_by_hand():
    # Class 0: 2 right of 2 labelled, 3 predicted; class 1: 1 of 2, 2 predicted; class 2: 1 of 2, 1 predicted.
    f1 = [2 * 2 / (2 + 3), 2 * 1 / (2 + 2), 2 * 1 / (2 + 1)]
    assert metrics.macro_f1(LOGITS, LABELS, 3) == pytest.approx(sum(f1) / 3, abs=1e-12)
    assert metrics.class_acc(LOGITS, LABELS, 3) == {"0": 1.0, "1": 0.5, "2": 0.5}
    p = torch.softmax(LOGITS, 1)
    conf = p.max(1).values.tolist()
    correct = [1, 0, 1, 0, 1, 1]
    bins: dict[int, list[int]] = {}
    for i, c in enumerate(conf):
        bins.setdefault(min(math.ceil(c * 15), 15) - 1, []).append(i)
    expected = sum(abs(sum(correct[i] for i in idx) - sum(conf[i] for i in idx)) for idx in bins.values()) / 6
    assert metrics.ece(LOGITS, LABELS, 3) == pytest.approx(expected, abs=1e-12)
    found = metrics.compute(LOGITS, LABELS, 3)
    assert set(found) == {"macro_f1", "class_acc.0", "class_acc.1", "class_acc.2", "ece"}


def test_focal_loss_by_hand_and_gamma_zero_is_cross_entropy():
    p = torch.softmax(LOGITS, 1)[torch.arange(6), LABELS]
    expected = (-((1 - p) ** 2) * p.log()).mean()
    assert FocalLoss(2.0)(LOGITS, LABELS).item() == pytest.approx(expected.item(), abs=1e-12)
    ce = torch.nn.functional.cross_entropy(LOGITS, LABELS)
    assert FocalLoss(0.0)(LOGITS, LABELS).item() == pytest.approx(ce.item(), abs=1e-12)
    built = build_loss(LossCfg(name="focal", focal_gamma=2.0), 3)
    assert built(LOGITS, LABELS).item() == pytest.approx(expected.item(), abs=1e-12)


def test_loss_names_are_checked_and_new_keys_keep_old_hashes():
    from ablate.config import config_hash

    assert config_hash(from_dict({})) == config_hash(from_dict({"loss": {"name": "cross_entropy"}}))
    assert config_hash(from_dict({})) != config_hash(from_dict({"loss": {"name": "focal"}}))
    with pytest.raises(ConfigError, match="loss.name must be one of cross_entropy, focal"):
        expand(parse('[base]\nloss = { name = "hinge" }\n'))

    @register_loss("squared_test")
    def _squared(cfg, num_classes):
        return torch.nn.MSELoss()

    assert expand(parse('[base]\nloss = { name = "squared_test" }\n'))[0].config.loss.name == "squared_test"


def test_unknown_metrics_are_refused_naming_the_registry():
    with pytest.raises(ConfigError, match="unknown metric 'f1'; metrics: .*macro_f1.*class_acc.N.*ece"):
        metrics.check("f1")
    metrics.check("class_acc.7")
    with pytest.raises(ConfigError, match="claim metric must be one of"):
        claims.parse({"text": "t", "check": "best", "axis": "a", "value": 1, "metric": "f1"}, {"a": [1, 2]})


STUDY = """
description = "focal against cross-entropy"
seeds = 2
[base]
epochs = 2
batch_size = 64
train_subset = 256
data = { dataset = "synthetic" }
model = { name = "plain_cnn", depth = 1, width = 4 }
[axes]
"loss.name" = ["cross_entropy", "focal"]
[[claims]]
text = "focal loss has the higher macro-F1"
check = "higher"
axis = "loss.name"
value = "focal"
than = "cross_entropy"
metric = "macro_f1"
"""


def test_metrics_are_recorded_per_epoch_and_taken_by_compare_and_claims(tmp_path):
    (tmp_path / "focal.toml").write_text(STUDY)
    db = tmp_path / "r.db"
    summary = run_study(
        str(tmp_path / "focal.toml"), db=str(db), device="cpu", fuse=2, reporter=QuietReporter(lambda _: None)
    )
    assert summary.counts == {"complete": 4}
    with closing(sqlite3.connect(db)) as conn:
        names = {n for (n,) in conn.execute("SELECT DISTINCT name FROM metrics")}
        per_run = conn.execute("SELECT COUNT(*) FROM metrics WHERE name = 'macro_f1'").fetchone()[0]
    assert {"macro_f1", "ece", *(f"class_acc.{i}" for i in range(10))} <= names and per_run == 4 * 2
    result = CliRunner().invoke(app, ["compare", "focal", "--metric", "macro_f1", "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    (row,) = out["comparisons"]
    assert (out["metric"], out["baseline"], row["value"], row["n"]) == ("macro_f1", "cross_entropy", "focal", 2)
    # The claim is checked on the same numbers: a verdict, not "not run".
    from ablate.results import study_runs, with_derived
    from ablate.store import Store

    store = Store.open(str(db))
    try:
        chosen = study_runs(store, "focal")
        frame = with_derived(store, chosen.finished, ["macro_f1"])
    finally:
        store.close()
    assert frame["macro_f1"].notna().all() and frame["macro_f1"].between(0, 1).all()
    study = parse(STUDY)
    verdict = claims.evaluate(study.claims[0], frame, study.axes, "focal")
    assert verdict.verdict in ("supported", "contradicted", "inconclusive")
    mean = frame.groupby("loss.name")["macro_f1"].mean()
    assert row["mean_diff"] == pytest.approx(mean["focal"] - mean["cross_entropy"], abs=1e-9)


def test_export_carries_the_evaluated_metrics_of_runs_that_have_them(tmp_path):
    (tmp_path / "focal.toml").write_text(STUDY.replace("seeds = 2", "seeds = 1").replace("epochs = 2", "epochs = 1"))
    db = tmp_path / "r.db"
    run_study(str(tmp_path / "focal.toml"), db=str(db), device="cpu", fuse=1, reporter=QuietReporter(lambda _: None))
    result = CliRunner().invoke(app, ["export", "focal", "--db", str(db), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 0, result.output
    import pandas as pd

    frame = pd.read_csv(tmp_path / "f.csv")
    with closing(sqlite3.connect(db)) as conn:
        stored = dict(conn.execute("SELECT run_id, value FROM metrics WHERE name = 'macro_f1'").fetchall())
    assert dict(zip(frame["run_id"], frame["macro_f1"])) == pytest.approx(stored)
    assert "ece" in frame.columns and frame["ece"].between(0, 1).all()
