"""Fused training in the trainer: a group of runs in one model step gives each member what it
gets alone (``ablate.train.train_group``, ``ablate.fusion``), and groups form only where
they may.

The tolerance, stated once and documented in README.md: on the CPU in fp32, a fused
member's per-epoch train and test loss are within ``LOSS_TOL`` of the same run alone, and its
accuracies within ``ACC_IMAGES`` images. Measured here: at most 1.2e-4 in loss and one
image; rounding, from a grouped convolution summing in another order, carried on by SGD
momentum (../shared/docs/fusion-facts.md). Two seeds of one of these configs differ by
6e-2 in test loss, and the smoke study's seeds by 9e-3: the tolerance is far below both.
The data order, augmentation and initialisation are bitwise those of the lone run.
"""

from __future__ import annotations

import math

import pytest
import torch

from ablate.augment import prepare
from ablate.config import from_dict
from ablate.data import synthetic
from ablate.fusion import fuse_key, group, why_alone
from ablate.train import Hooks, _device_batches, _Run, train, train_group
from tests.conftest import one_thread as single_thread

LOSS_TOL = 1e-3
ACC_IMAGES = 2

BASE = {
    "epochs": 3,
    "batch_size": 64,
    "data": {"dataset": "synthetic", "aug": {"crop_padding": 2, "flip": True, "cutout": 4}},
    "model": {"name": "plain_cnn", "depth": 2, "width": 8},
    "optimizer": {"lr": 0.05, "nesterov": True},
    "probes": {"grad_norm_every": 5},
}


def cfg(**over):
    return from_dict({**BASE, **over})


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=512, n_test=256)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Fused and alone at one thread count: a float sum split over other threads rounds otherwise."""
    with single_thread():
        yield


class Record:
    """Everything a run reports: epochs, probes, checkpoints, its end."""

    def __init__(self):
        self.epochs, self.probes, self.states, self.ends, self.artifacts = [], [], [], [], {}

    def hooks(self, **extra) -> Hooks:
        return Hooks(
            epoch=lambda e, m: self.epochs.append((e, dict(m))),
            probe=lambda s, v: self.probes.append((s, v)),
            checkpoint=self.states.append,
            end=self.ends.append,
            artifact=lambda n, a: self.artifacts.__setitem__(n, a),
            **extra,
        )


def alone_and_fused(cfgs, data):
    alone = [Record() for _ in cfgs]
    for c, r in zip(cfgs, alone):
        train(c, data, "cpu", r.hooks())
    fused = [Record() for _ in cfgs]
    results = train_group(cfgs, data, "cpu", [r.hooks() for r in fused])
    return alone, fused, results


def assert_as_alone(a: Record, f: Record, n_train: int, n_test: int) -> None:
    assert [e for e, _ in a.epochs] == [e for e, _ in f.epochs]
    for (_, ma), (_, mf) in zip(a.epochs, f.epochs):
        for key in ("train_loss", "test_loss"):
            assert abs(ma[key] - mf[key]) <= LOSS_TOL, (key, ma[key], mf[key])
        assert abs(ma["train_acc"] - mf["train_acc"]) * n_train <= ACC_IMAGES + 1e-9
        assert abs(ma["test_acc"] - mf["test_acc"]) * n_test <= ACC_IMAGES + 1e-9
        assert ma["lr"] == mf["lr"] and ma["params"] == mf["params"]
    # The data order and every random draw: the generator after each epoch, bitwise.
    assert len(a.states) == len(f.states) == len(a.epochs) - 1
    for sa, sf in zip(a.states, f.states):
        assert torch.equal(sa["generator"], sf["generator"])
        assert torch.equal(sa["cpu_rng"], sf["cpu_rng"])  # what the lone run would checkpoint
    assert [s for s, _ in a.probes] == [s for s, _ in f.probes] and a.probes
    for (_, va), (_, vf) in zip(a.probes, f.probes):
        assert va.keys() == vf.keys() and all(math.isclose(va[k], vf[k], rel_tol=1e-2) for k in va)


@pytest.mark.parametrize("axis", ["seeds", "learning rates"])
def test_each_member_of_a_fused_group_gets_the_numbers_it_gets_alone(axis, data):
    if axis == "seeds":
        cfgs = [cfg(seed=s) for s in range(3)]
    else:
        cfgs = [cfg(optimizer={"lr": lr, "nesterov": True}) for lr in (0.02, 0.05, 0.1)]
    alone, fused, results = alone_and_fused(cfgs, data)
    assert [r.status for r in results] == ["complete"] * 3
    for a, f in zip(alone, fused):
        assert_as_alone(a, f, 512, 256)
        assert [e.status for e in f.ends] == ["complete"]
    spread = abs(alone[0].epochs[-1][1]["test_loss"] - alone[1].epochs[-1][1]["test_loss"])
    assert spread > 10 * LOSS_TOL  # the members really differ: the tolerance could not hide a mix-up


def test_members_may_differ_in_optimizer_kind_schedule_and_label_smoothing(data):
    """Each member keeps its own optimizer: Ranger21's per-tensor norms fuse as well as SGD."""
    cfgs = [
        cfg(epochs=2, optimizer={"name": "ranger21", "lr": 1e-3}, loss={"label_smoothing": 0.1}),
        cfg(epochs=2, seed=1, optimizer={"name": "adam", "lr": 1e-3}, schedule={"name": "onecycle"}),
        cfg(epochs=2, seed=2, averaging={"name": "ema", "every": 2}),
    ]
    alone, fused, _ = alone_and_fused(cfgs, data)
    for a, f in zip(alone, fused):
        assert_as_alone(a, f, 512, 256)


def test_members_whose_whitening_bias_freezes_mid_run_get_their_lone_numbers(data):
    """speednet's whitening bias trains for 10 of the 24 steps (``ablate.freezing``): every
    member freezes it at that step, and the stacked pass stops its gradient for all."""
    model = {"name": "speednet", "widths": [8, 16, 16], "whiten_bias_steps": 10, "bias_lr_scale": 1.0}
    # SGD: Muon's orthogonalised steps carry a grouped conv's last-bit differences further
    # (1e-3 to 1e-2 in three epochs here, with or without the freeze) than this file's tolerance.
    cfgs = [cfg(seed=s, model=model) for s in range(2)]
    alone, fused, _ = alone_and_fused(cfgs, data)
    for a, f in zip(alone, fused):
        assert_as_alone(a, f, 512, 256)
        for sa, sf in zip(a.states, f.states):
            assert torch.allclose(sf["model"]["0.bias"], sa["model"]["0.bias"], atol=1e-4)


def test_data_order_and_augmentation_are_bitwise_those_of_the_lone_run(data):
    every_aug = {
        "crop_padding": 2,
        "pad_mode": "reflect",
        "flip": True,
        "flip_mode": "alternate",
        "cutout": 4,
        "jitter": 0.2,
        "rotate": 10,
    }
    cfgs = [cfg(seed=s, data={"dataset": "synthetic", "aug": every_aug}) for s in (0, 7, 3)]
    for epoch in (1, 2):
        lone = [list(_device_batches(data, c.data.aug, [_Run(c, data, torch.device("cpu"))], epoch)) for c in cfgs]
        runs = [_Run(c, data, torch.device("cpu")) for c in cfgs]
        together = list(_device_batches(data, cfgs[0].data.aug, runs, epoch))
        assert len(together) == len(lone[0]) == 512 // 64
        for step, (x, y) in enumerate(together):
            for j in range(3):
                assert torch.equal(x[j], lone[j][step][0]) and torch.equal(y[j], lone[j][step][1])


INDEX_ONLY = [
    {"crop_padding": 2, "flip": True},
    {"crop_padding": 2, "pad_mode": "reflect", "flip": True, "flip_mode": "alternate"},
    {"flip": True, "flip_mode": "alternate"},
    {},
]


@pytest.mark.parametrize("aug", INDEX_ONLY)
def test_batches_gathered_from_the_set_prepared_once_are_bitwise_the_per_batch_ones(aug, data):
    cfgs = [cfg(seed=s, data={"dataset": "synthetic", "aug": aug}) for s in (0, 7)]
    a = cfgs[0].data.aug
    prepared = prepare(data.train_x, a, stats=data.stats)
    for members in ([cfgs[0]], cfgs):  # a lone run, and each member of a fused group
        for epoch in (1, 2):
            per_batch = list(_device_batches(data, a, [_Run(c, data, torch.device("cpu")) for c in members], epoch))
            runs = [_Run(c, data, torch.device("cpu")) for c in members]
            gathered = list(_device_batches(data, a, runs, epoch, prepared))
            assert len(gathered) == len(per_batch) == 512 // 64
            for (x, y), (x0, y0) in zip(gathered, per_batch):
                assert x.dtype == x0.dtype == torch.float32 and torch.equal(x, x0) and torch.equal(y, y0)


def test_the_trainer_gathers_from_the_prepared_set_and_its_numbers_do_not_move(data, monkeypatch):
    aug = {"crop_padding": 2, "pad_mode": "reflect", "flip": True, "flip_mode": "alternate"}
    cfgs = [cfg(seed=s, epochs=2, data={"dataset": "synthetic", "aug": aug}) for s in (0, 1)]
    gathered = [Record() for _ in cfgs]
    train_group(cfgs, data, "cpu", [r.hooks() for r in gathered])
    monkeypatch.setattr("ablate.train.index_only", lambda aug: False)  # today's per-batch uint8 path
    per_batch = [Record() for _ in cfgs]
    train_group(cfgs, data, "cpu", [r.hooks() for r in per_batch])
    for g, b in zip(gathered, per_batch):
        assert [(e, {k: v for k, v in m.items() if "time" not in k and "per_s" not in k}) for e, m in g.epochs] == [
            (e, {k: v for k, v in m.items() if "time" not in k and "per_s" not in k}) for e, m in b.epochs
        ]


def test_a_fused_members_checkpoint_is_a_lone_checkpoint_and_resumes_alone(data):
    cfgs = [cfg(seed=s) for s in range(2)]
    alone = Record()
    train(cfgs[1], data, "cpu", alone.hooks())
    fused = [Record(), Record()]
    train_group(cfgs, data, "cpu", [r.hooks() for r in fused])
    sa, sf = alone.states[0], fused[1].states[0]
    assert sa.keys() == sf.keys() and sa["epoch"] == sf["epoch"] == 1
    for part in ("model", "optimizer", "schedule"):
        assert _structure(sa[part]) == _structure(sf[part])
    for name, tensor in sa["model"].items():
        assert (tensor.float() - sf["model"][name].float()).abs().max() <= 1e-3
    resumed = Record()
    train(cfgs[1], data, "cpu", resumed.hooks(), resume=sf)  # alone, from the fused checkpoint
    (_, last_alone), (_, last_resumed) = alone.epochs[-1], resumed.epochs[-1]
    assert [e for e, _ in resumed.epochs] == [2, 3]
    assert abs(last_alone["test_loss"] - last_resumed["test_loss"]) <= LOSS_TOL


def test_a_resumed_members_checkpoints_keep_the_lone_runs_random_state(data):
    # A fused member holds its own global RNG state, the one the lone run would checkpoint;
    # a resume must take it from the checkpoint, or the next checkpoint carries a mate's.
    cfgs = [cfg(seed=s) for s in range(2)]
    alone = Record()
    train(cfgs[0], data, "cpu", alone.hooks())
    first, again = [Record(), Record()], [Record(), Record()]
    train_group(cfgs, data, "cpu", [r.hooks() for r in first])
    train_group(cfgs, data, "cpu", [r.hooks() for r in again], resumes=[r.states[0] for r in first])
    assert torch.equal(first[0].states[0]["cpu_rng"], alone.states[0]["cpu_rng"])
    assert [s["epoch"] for s in again[0].states] == [s["epoch"] for s in alone.states[1:]] == [2]  # none after the last
    assert torch.equal(again[0].states[0]["cpu_rng"], alone.states[1]["cpu_rng"])


def test_compile_is_for_cuda_only_and_changes_nothing_on_the_cpu(data, monkeypatch):
    def refuse(fn, *args):
        raise AssertionError("torch.compile asked for on the CPU")

    monkeypatch.setattr("ablate.train.compiled", refuse)
    monkeypatch.setattr("ablate.fusion.compiled", refuse)
    cfgs = [cfg(seed=s, epochs=1) for s in range(2)]
    for members in ([cfgs[0]], cfgs):
        plain = train_group(members, data, "cpu")
        asked = train_group(members, data, "cpu", compile=True)
        for a, b in zip(asked, plain):
            for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
                assert a.metrics[key] == b.metrics[key]


def _structure(obj):
    """Keys, nesting, tensor shapes and dtypes: what a loader relies on."""
    if isinstance(obj, dict):
        return {k: _structure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_structure(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return (tuple(obj.shape), obj.dtype)
    return type(obj).__name__


def test_a_diverging_member_drops_out_and_its_mates_go_on_as_alone(data):
    opt = {"weight_decay": 0.0, "momentum": 0.0}
    cfgs = [cfg(optimizer={**opt, "lr": lr}) for lr in (0.05, 1e12, 0.1)]
    alone, fused, results = alone_and_fused(cfgs, data)
    assert [r.status for r in results] == ["complete", "diverged", "complete"]
    diverged = results[1]
    assert diverged.epochs_done == alone[1].ends[0].epochs_done < 3 and not math.isfinite(
        diverged.metrics["train_loss"]
    )
    assert fused[1].ends == [diverged] and [e for e, _ in fused[1].epochs] == list(range(1, diverged.epochs_done + 1))
    for j in (0, 2):
        assert_as_alone(alone[j], fused[j], 512, 256)


def test_a_member_whose_test_loss_is_not_finite_is_diverged_and_its_mates_go_on(data):
    opt = {"weight_decay": 0.0, "momentum": 0.0}
    cfgs = [cfg(train_subset=64, probes={"grad_norm_every": 1}, optimizer={**opt, "lr": lr}) for lr in (0.05, 1e8)]
    alone, fused, results = alone_and_fused(cfgs, data)
    assert [r.status for r in results] == ["complete", "diverged"]
    last = fused[1].epochs[-1][1]
    assert math.isfinite(last["train_loss"]) and not math.isfinite(last["test_loss"])
    assert fused[1].ends == [results[1]] and results[1].epochs_done == len(fused[1].epochs) < 3
    assert_as_alone(alone[0], fused[0], 64, 256)


def test_a_member_that_must_stop_leaves_and_the_others_finish(data):
    steps = []
    cfgs = [cfg(seed=s, epochs=2) for s in range(3)]
    alone = Record()
    train(cfgs[2], data, "cpu", alone.hooks())
    fused = [Record() for _ in cfgs]
    hooks = [r.hooks() for r in fused]
    hooks[1].should_stop = lambda: steps.append(1) or len(steps) >= 3  # stops in its first epoch
    results = train_group(cfgs, data, "cpu", hooks)
    assert [r.status for r in results] == ["complete", "stopped", "complete"]
    assert results[1].epochs_done == 0 and fused[1].epochs == []
    assert_as_alone(alone, fused[2], 512, 256)


# ---------------------------------------------------------------------- groups


def test_groups_form_from_seeds_and_per_member_settings_only():
    seeds = [cfg(seed=s) for s in range(3)]
    lrs = [cfg(optimizer={"lr": lr}) for lr in (0.1, 0.2)]
    deeper = [cfg(model={"name": "plain_cnn", "depth": 3, "width": 8})]
    other_batch = [cfg(batch_size=32)]
    other_aug = [cfg(data={"dataset": "synthetic"})]
    configs = seeds + lrs + deeper + other_batch + other_aug
    assert group(configs) == [[0, 1, 2, 3, 4], [5], [6], [7]]
    assert group(configs, cap=2) == [[0, 1], [2, 3], [4], [5], [6], [7]]
    assert group(configs, cap=1) == [[i] for i in range(8)]
    assert fuse_key(seeds[0]) == fuse_key(lrs[1]) != fuse_key(deeper[0])


@pytest.mark.parametrize(
    "model, reason",
    [
        ({"name": "plain_cnn", "depth": 2, "width": 8, "dropout": 0.3}, "draws random numbers"),
        ({"name": "densenet", "blocks": [2, 2], "growth": 4, "bottleneck": 8}, "op vmap cannot batch"),
    ],
)
def test_models_that_vmap_cannot_train_as_alone_never_fuse(model, reason, data):
    runs = [cfg(model=model, seed=s) for s in range(2)]
    assert reason in why_alone(runs[0]) and fuse_key(runs[0]) is None
    assert group(runs) == [[0], [1]]
    with pytest.raises(ValueError, match="cannot train fused"):
        train_group(runs, data, "cpu")


def test_the_trainer_refuses_a_group_whose_shapes_or_steps_differ(data):
    for other in (
        cfg(model={"name": "plain_cnn", "depth": 3, "width": 8}),
        cfg(epochs=2),
        cfg(train_subset=256),
        cfg(data={"dataset": "synthetic", "pipeline": "pil"}),
    ):
        with pytest.raises(ValueError, match="cannot train fused"):
            train_group([cfg(), other], data, "cpu")


def test_members_that_resume_from_different_epochs_are_refused(data):
    states = []
    train(cfg(epochs=2), data, "cpu", Hooks(checkpoint=states.append))
    with pytest.raises(ValueError, match="resume from epochs"):
        train_group([cfg(epochs=2), cfg(epochs=2, seed=1)], data, "cpu", resumes=[states[0], None])


def test_a_fused_member_that_keeps_its_kernels_stores_its_own(data):
    cfgs = [cfg(seed=s, epochs=1, probes={"kernels": True}) for s in range(2)]
    alone, fused, _ = alone_and_fused(cfgs, data)
    for a, f in zip(alone, fused):
        assert (a.artifacts["kernels.conv1"] - f.artifacts["kernels.conv1"]).__abs__().max() <= 1e-3
    assert (fused[0].artifacts["kernels.conv1"] != fused[1].artifacts["kernels.conv1"]).any()
