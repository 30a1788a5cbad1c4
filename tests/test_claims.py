"""The report's claims as checks: each verdict from runs whose numbers are known, the derived
metrics they test, the study files' claims, and the Claims table of the report."""

import json

import numpy as np
import pandas as pd
import pytest

from ablate import claims, derived
from ablate.config import ConfigError
from ablate.report import write_report
from ablate.store import NewRun
from ablate.studies import list_studies

AXES = {"model.depth": [1, 2, 3], "model.batchnorm": [False, True]}


def runs(values: dict, axis: str = "model.depth", metric: str = "test_acc", other: dict | None = None) -> pd.DataFrame:
    """One finished run per (value, seed): ``values`` maps an axis value to its per-seed numbers."""
    rows = []
    for value, per_seed in values.items():
        for seed, x in enumerate(per_seed):
            row = {"run_id": len(rows) + 1, "status": "complete", "seed": seed, axis: value, metric: x,
                   "config_hash": f"{axis}={value}", **(other or {})}
            rows.append(row)
    return pd.DataFrame(rows)


def verdict(item: dict, frame: pd.DataFrame, axes=AXES) -> claims.Verdict:
    return claims.evaluate(claims.parse(item, axes), frame, axes, "toy")


BEST = {"text": "3 layers are best", "check": "best", "axis": "model.depth", "value": 3}


@pytest.mark.parametrize("values, expected", [
    ({1: [0.50, 0.52, 0.51], 2: [0.60, 0.61, 0.63], 3: [0.70, 0.72, 0.71]}, "supported"),
    ({1: [0.50, 0.52, 0.51], 2: [0.80, 0.81, 0.83], 3: [0.70, 0.72, 0.71]}, "contradicted"),
    ({1: [0.50, 0.52, 0.51], 2: [0.70, 0.75, 0.66], 3: [0.70, 0.72, 0.71]}, "inconclusive"),
    ({1: [0.50], 2: [0.60], 3: [0.70]}, "inconclusive"),
    ({1: [0.50, 0.52], 2: [0.60, 0.61]}, "not run"),
])
def test_best(values, expected):
    found = verdict(BEST, runs(values))
    assert found.verdict == expected, found
    if len(values[1]) == 1:  # one seed: no test, but the direction is said and the remedy named
        assert "the direction agrees" in found.evidence and "--seeds" in found.why


def test_best_names_the_closest_rival():
    found = verdict(BEST, runs({1: [0.5, 0.52, 0.51], 2: [0.60, 0.61, 0.63], 3: [0.70, 0.72, 0.71]}))
    assert found.evidence.startswith("3: 71.00%; closest: 2 vs 3: -9.67 pp (n = 3, 95% CI")


@pytest.mark.parametrize("check, values, expected", [
    ("worst", {1: [0.4, 0.41, 0.42], 2: [0.6, 0.6, 0.61], 3: [0.7, 0.7, 0.72]}, "supported"),
    ("not_best", {1: [0.4, 0.41, 0.42], 2: [0.6, 0.6, 0.61], 3: [0.7, 0.7, 0.72]}, "supported"),
    ("not_best", {1: [0.9, 0.91, 0.92], 2: [0.6, 0.6, 0.61], 3: [0.7, 0.7, 0.72]}, "contradicted"),
])
def test_worst_and_not_best(check, values, expected):
    item = {"text": "t", "check": check, "axis": "model.depth", "value": 1}
    assert verdict(item, runs(values)).verdict == expected


@pytest.mark.parametrize("check, values, expected", [
    ("higher", {False: [0.5, 0.52, 0.49], True: [0.6, 0.61, 0.6]}, "supported"),
    ("higher", {False: [0.7, 0.72, 0.69], True: [0.6, 0.61, 0.6]}, "contradicted"),
    ("lower", {False: [0.7, 0.72, 0.69], True: [0.6, 0.61, 0.6]}, "supported"),
    ("higher", {False: [0.5, 0.62, 0.49], True: [0.6, 0.51, 0.6]}, "inconclusive"),
])
def test_higher_and_lower(check, values, expected):
    item = {"text": "t", "check": check, "axis": "model.batchnorm", "value": True, "than": False}
    found = verdict(item, runs(values, "model.batchnorm"))
    assert found.verdict == expected and found.evidence.startswith("True: ")


@pytest.mark.parametrize("values, expected", [
    ({1: [0.50, 0.52, 0.51], 2: [0.502, 0.521, 0.512], 3: [0.499, 0.522, 0.508]}, "supported"),
    ({1: [0.50, 0.52, 0.51], 2: [0.60, 0.62, 0.61], 3: [0.499, 0.522, 0.508]}, "contradicted"),
    ({1: [0.50, 0.52, 0.51], 2: [0.51, 0.50, 0.535], 3: [0.499, 0.522, 0.508]}, "inconclusive"),
])
def test_similar(values, expected):
    item = {"text": "depth barely matters", "check": "similar", "axis": "model.depth", "threshold": 1.0}
    assert verdict(item, runs(values)).verdict == expected


def test_steadier_compares_the_spread_over_another_axis():
    axes = {"model.batchnorm": [False, True], "optimizer.lr": [0.01, 0.1]}
    rows = []
    for seed, (lo_f, hi_f, lo_t, hi_t) in enumerate([(0.3, 0.6, 0.58, 0.62), (0.35, 0.62, 0.6, 0.63), (0.25, 0.6, 0.57, 0.61)]):
        for bn, lr, acc in ((False, 0.01, lo_f), (False, 0.1, hi_f), (True, 0.01, lo_t), (True, 0.1, hi_t)):
            rows.append({"run_id": len(rows), "status": "complete", "seed": seed, "model.batchnorm": bn,
                         "optimizer.lr": lr, "test_acc": acc, "config_hash": f"{bn}{lr}"})
    item = {"text": "BN is less sensitive to the learning rate", "check": "steadier", "axis": "model.batchnorm",
            "value": True, "than": False, "over": "optimizer.lr"}
    found = verdict(item, pd.DataFrame(rows), axes)
    assert found.verdict == "supported" and "spread 3.67% with True, 30.67% with False" in found.evidence
    backwards = verdict({**item, "value": False, "than": True}, pd.DataFrame(rows), axes)
    assert backwards.verdict == "contradicted"


def test_where_holds_another_axis():
    frame = pd.concat([
        runs({False: [0.5, 0.5, 0.5], True: [0.6, 0.6, 0.61]}, "model.batchnorm", other={"model.depth": 1}),
        runs({False: [0.7, 0.7, 0.7], True: [0.6, 0.6, 0.61]}, "model.batchnorm", other={"model.depth": 3}),
    ], ignore_index=True)
    frame["config_hash"] = frame["config_hash"] + frame["model.depth"].astype(str)
    item = {"text": "t", "check": "higher", "axis": "model.batchnorm", "value": True, "than": False}
    assert verdict({**item, "where": {"model.depth": 1}}, frame).verdict == "supported"
    assert verdict({**item, "where": {"model.depth": 3}}, frame).verdict == "contradicted"


def test_a_metric_no_run_recorded_is_not_run():
    item = {"text": "smoother", "check": "lower", "axis": "model.batchnorm", "value": True, "than": False,
            "metric": "landscape_range"}
    frame = runs({False: [1.0], True: [2.0]}, "model.batchnorm").assign(landscape_range=np.nan)
    found = verdict(item, frame)
    assert found.verdict == "not run" and "probes.landscape_every" in found.why


@pytest.mark.parametrize("item, message", [
    ({"text": "t", "check": "bestest", "axis": "model.depth", "value": 3}, "check must be one of"),
    ({"text": "t", "check": "best", "axis": "model.width", "value": 3}, "unknown axis 'model.width'"),
    ({"text": "t", "check": "best", "axis": "model.depth", "value": 4}, "4 is not one of its values"),
    ({"text": "t", "check": "higher", "axis": "model.depth", "value": 3}, "needs 'than'"),
    ({"text": "t", "check": "similar", "axis": "model.depth"}, "needs 'threshold'"),
    ({"text": "t", "check": "best", "axis": "model.depth", "value": 3, "metric": "speed"}, "metric must be one of"),
    ({"check": "best", "axis": "model.depth", "value": 3}, "needs 'text'"),
    ({"text": "t", "check": "best", "axis": "model.depth", "value": 3, "colour": 1}, "unknown claim key 'colour'"),
    ({"text": "t", "check": "steadier", "axis": "model.depth", "value": 3, "than": 1}, "needs 'over'"),
])
def test_claims_are_checked_when_the_study_loads(item, message):
    with pytest.raises(ConfigError, match=message):
        claims.parse(item, AXES)


def test_every_built_in_claim_parses_and_reads_as_a_check():
    found = [(s, c) for s in list_studies() for c in s.claims]
    assert len(found) >= 20  # the report's claims, in the study files
    for study, claim in found:
        assert claim.text and claims.describe(claim, study.axes)


def test_derived_metrics():
    frame = pd.DataFrame({"run_id": [1, 2], "status": ["complete", "diverged"], "epochs": [4, 4]})
    metrics = pd.DataFrame([
        (1, 1, "test_acc", 0.2), (1, 2, "test_acc", 0.4), (1, 3, "test_acc", 0.5), (1, 4, "test_acc", 0.6),
        (1, 1, "epoch_time", 2.0), (1, 2, "epoch_time", 4.0),
        (1, 10, "landscape.x0.5", 1.0), (1, 10, "landscape.x1", 3.0), (1, 20, "landscape.x0.5", 2.0),
        (1, 20, "landscape.x1", 2.5),
    ], columns=["run_id", "step", "name", "value"])
    kernels = {1: {"kernels.conv1": np.ones((2, 3, 1, 1), np.float32) * np.array([1.0, 2.0]).reshape(2, 1, 1, 1)}}
    out = derived.add(frame, metrics, kernels, list(derived.DERIVED)).set_index("run_id")
    assert out.loc[1, "mean_test_acc"] == pytest.approx(0.425)
    assert out.loc[1, "early_test_acc"] == pytest.approx(0.2)  # epoch ceil(4 / 4) = 1
    assert out.loc[1, "epoch_time"] == pytest.approx(3.0)
    assert out.loc[1, "landscape_range"] == pytest.approx((2.0 + 0.5) / 2)
    assert out.loc[1, "kernel_norm"] == pytest.approx((np.sqrt(3) + 2 * np.sqrt(3)) / 2)
    assert out["diverged"].tolist() == [0.0, 1.0]
    assert np.isnan(out.loc[2, "mean_test_acc"])


def test_the_report_writes_a_claims_table(store, tmp_path):
    spec = {"base": {}, "axes": {"model.dropout": [0.0, 0.5]}, "claims": [
        {"text": "Dropout does not improve the model very much", "section": "4.7", "check": "similar",
         "axis": "model.dropout", "threshold": 1.0},
        {"text": "the optimal dropout rate is no dropout", "section": "4.7", "check": "best",
         "axis": "model.dropout", "value": 0.0},
    ]}
    sid = store.sync_study("dropout", "", spec)
    points = [(d, s, acc) for d, accs in ((0.0, (0.6, 0.62, 0.61)), (0.5, (0.5, 0.51, 0.53))) for s, acc in enumerate(accs)]
    store.add_runs(sid, [NewRun(f"d{d}", s, {"model": {"dropout": d}}, f"d={d}") for d, s, _ in points])
    for _, _, acc in points:
        claim = store.claim(sid, "cpu", "h", 1)
        store.record_epoch(claim.run_id, 1, {"test_acc": acc})
        store.finish(claim.run_id, "complete", {"test_acc": acc})
    write_report(store, tmp_path)
    readme = (tmp_path / "README.md").read_text()
    assert "## Claims" in readme and "(1 supported, 1 contradicted, " in readme
    assert "not run" in readme  # the built-in studies' claims without runs say so
    row = next(line for line in readme.splitlines() if line.startswith("| 4.7 | the optimal dropout"))
    assert "**supported**" in row and "`dropout`" in row and "0.5 vs 0.0: -9.67 pp" in row
    row = next(line for line in readme.splitlines() if line.startswith("| 4.7 | Dropout does not"))
    assert "**contradicted**" in row
    assert json.loads(json.dumps(claims.parse(spec["claims"][0], spec["axes"]).to_dict()))["threshold"] == 1.0
