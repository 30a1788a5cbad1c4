"""``compile``: the step's forward and loss compiled as one function, checked on the CPU
with torch.compile's ``aot_eager`` backend (no code generation, so it runs anywhere): no
graph break, no recompile for a second run of the same config, and one for a parameter
frozen mid-run, as the whitening bias freeze does."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from ablate.config import from_dict
from ablate.data import synthetic
from ablate.train import train, train_group, warm_up

TINY = {
    "epochs": 1,
    "batch_size": 32,
    "train_subset": 96,
    "precision": "fp32",
    "data": {"dataset": "synthetic", "aug": {"crop_padding": 2, "flip": True}},
    "model": {"name": "plain_cnn", "depth": 2, "width": 4},
    "optimizer": {"lr": 0.05},
}


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=96, n_test=32)


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()  # the graphs earlier tests compiled, and the counters
    counters.clear()
    yield
    torch._dynamo.reset()


def graphs() -> int:
    return counters["stats"]["unique_graphs"]


# A new run's model is a new module object. Where dynamo lifts a module's parameters into
# graph inputs (inline_inbuilt_nn_modules: on by default in recent torch, always on in this
# one) the graph is reused; an older torch without it, such as the project's lowest (2.2),
# guards on the module's identity and compiles once more per run.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)  # "always True" in today's torch, and says so
    REUSED = bool(getattr(torch._dynamo.config, "inline_inbuilt_nn_modules", False))


def graphs_after_runs(per_run: int, runs: int) -> int:
    """How many graphs ``runs`` runs of one config make, ``per_run`` each."""
    return per_run if REUSED else per_run * runs


@pytest.mark.parametrize("seeds", [[0], [0, 1]], ids=["alone", "fused"])
def test_the_step_compiles_once_without_a_graph_break_and_a_second_run_reuses_it(seeds, data):
    cfgs = [from_dict({**TINY, "seed": s}) for s in seeds]
    eager = train_group(cfgs, data, "cpu")
    first = train_group(cfgs, data, "cpu", compile=True, backend="aot_eager")
    assert graphs() == 1 and not counters["graph_break"], dict(counters["graph_break"])
    second = train_group(cfgs, data, "cpu", compile=True, backend="aot_eager")  # new models, same shapes
    assert graphs() == graphs_after_runs(1, 2) and not counters["graph_break"]
    for e, a, b in zip(eager, first, second):
        assert a.metrics["test_loss"] == b.metrics["test_loss"]
        assert a.metrics["test_loss"] == pytest.approx(e.metrics["test_loss"], abs=1e-4)


# speednet's whitening bias frozen after its first step (``whiten_bias_steps``), as the
# speedrun study freezes it after 75: the step's graph changes there.
FROZEN = {
    **TINY,
    "epochs": 2,
    "data": {"dataset": "synthetic"},
    "model": {"name": "speednet", "widths": [4, 8, 8], "whiten_bias_steps": 1},
}


def test_the_whitening_bias_freeze_costs_one_recompile_and_the_next_run_none(data):
    cfg = from_dict(FROZEN)
    eager = train(cfg, data, "cpu")
    first = train(cfg, data, "cpu", compile=True, backend="aot_eager")
    assert graphs() == 2 and not counters["graph_break"], dict(counters["graph_break"])
    second = train(cfg, data, "cpu", compile=True, backend="aot_eager")
    assert graphs() == graphs_after_runs(2, 2)  # the next run, before and after its freeze: both graphs are there
    assert first.metrics["test_loss"] == second.metrics["test_loss"]
    assert first.metrics["test_loss"] == pytest.approx(eager.metrics["test_loss"], abs=1e-4)


@pytest.mark.parametrize("spec", [TINY, FROZEN], ids=["plain", "frozen"])
def test_a_warm_up_compiles_every_graph_the_timed_run_needs(spec, data):
    cfg = from_dict({**spec, "seed": 3})
    warm_up([cfg], data, "cpu", backend="aot_eager")
    made = graphs()
    assert made == (2 if spec is FROZEN else 1)
    timed = train(cfg, data, "cpu", compile=True, backend="aot_eager")
    assert graphs() == (made if REUSED else 2 * made)
    # The warm-up trained other weights on other labels: none of it reaches the timed run.
    assert timed.metrics["test_loss"] == pytest.approx(train(cfg, data, "cpu").metrics["test_loss"], abs=1e-4)
