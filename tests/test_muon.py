"""Muon (``optimizer.name = "muon"``): the record's update, its groups, checkpoints and fusion."""

import io
import json
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from ablate.config import ConfigError, MuonCfg, OptimCfg, config_hash, from_dict
from ablate.data import synthetic
from ablate.models import create_model
from ablate.optim import build_optimizer, build_schedule, orthogonalize
from ablate.train import Hooks, train, train_group
from tests.conftest import one_thread

# The record's weights after 1 and 3 steps, computed once from airbench94_muon.py's own Muon
# class on the CPU (how: the file's "produced_by"); only the numbers are kept, not its code.
RECORD = json.loads((Path(__file__).parent / "assets" / "muon_record_steps.json").read_text())
# bf16 keeps 8 significant bits, so one rounding of the orthogonalised update (entries below 1)
# moves a weight by at most lr x 2^-8 ~ 1e-3 at lr 0.24. Here the numbers agree bitwise; a BLAS
# that sums in another order may flip a last bit. The same steps in fp32 miss by 7e-3, with
# 5 Newton-Schulz steps by 6e-2, without Nesterov or the renormalisation by more: each fails.
RECORD_TOL = 1e-3

TINY = {
    "epochs": 2,
    "batch_size": 32,
    "data": {"dataset": "synthetic", "aug": {"crop_padding": 2, "flip": True}},
    "model": {"name": "plain_cnn", "depth": 2, "width": 4},
    "optimizer": {"name": "muon", "lr": 0.2, "nesterov": True},  # the filters at the record's lr
}


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=512, n_test=128)


def weight(i: int, shape) -> torch.Tensor:
    return torch.sin(torch.arange(math.prod(shape), dtype=torch.float32) * 0.7 + i).reshape(shape)


def grad(i: int, t: int, shape) -> torch.Tensor:
    n = math.prod(shape)
    return (torch.cos(torch.arange(n, dtype=torch.float32) * 1.3 + 2 * i + t) * 0.1 * (t + 1)).reshape(shape)


@pytest.mark.parametrize("steps", [1, 3])
def test_steps_match_the_records_muon(steps):
    # 4 x 27 is wide; 12 x 4 is tall, orthogonalised through its transpose.
    (c_out, c_in, k, _), (c_out2, c_in2, k2, _) = RECORD["shapes"]
    model = nn.Sequential(nn.Conv2d(c_in, c_out, k, bias=False), nn.Conv2d(c_in2, c_out2, k2, bias=False))
    for i, conv in enumerate(model):
        conv.weight.data.copy_(weight(i, conv.weight.shape))
    opt = build_optimizer(OptimCfg(name="muon"), model, 10)  # the defaults are the record's
    (group,) = opt.param_groups
    for t in range(steps):
        group["lr"] = RECORD["lrs"][t]
        for i, conv in enumerate(model):
            conv.weight.grad = grad(i, t, conv.weight.shape)
        opt.step()
    for i, (conv, expected) in enumerate(zip(model, RECORD[f"after_{steps}"])):
        got, expected = conv.weight.detach().flatten(), torch.tensor(expected)
        assert (got - expected).abs().max() <= RECORD_TOL
        assert (got - weight(i, conv.weight.shape).flatten()).abs().max() > 30 * RECORD_TOL  # it did move


def test_newton_schulz_flattens_the_singular_values():
    m = torch.randn(16, 40, generator=torch.Generator().manual_seed(0)) * torch.logspace(-2, 1, 40)
    s = torch.linalg.svdvals(orthogonalize(m, 5).float())
    assert s.dtype == torch.float32 and 0.6 < s.min() and s.max() < 1.3  # from 1e-2..1e1 spread
    assert orthogonalize(m.T, 5).shape == (40, 16)


def test_groups_filters_get_muon_the_rest_sgd_each_its_lr_and_decay():
    model = create_model("plain_cnn", depth=2, width=4)
    cfg = OptimCfg(
        name="muon",
        lr=0.3,
        momentum=0.85,
        nesterov=True,
        weight_decay=1e-3,
        muon=MuonCfg(lr=0.2, bias_lr=0.05, bias_weight_decay=0.07),
    )
    filters, linear, biases = build_optimizer(cfg, model, 10).param_groups
    assert filters["orthogonalize"] and all(p.ndim == 4 for p in filters["params"])
    assert (filters["lr"], filters["momentum"], filters["weight_decay"], filters["ns_steps"]) == (0.2, 0.6, 0.0, 3)
    assert not linear["orthogonalize"] and all(p.ndim == 2 for p in linear["params"])
    assert (linear["lr"], linear["momentum"], linear["nesterov"], linear["weight_decay"]) == (0.3, 0.85, True, 1e-3)
    assert all(p.ndim == 1 for p in biases["params"]) and (biases["lr"], biases["weight_decay"]) == (0.05, 0.07)
    n = sum(len(g["params"]) for g in (filters, linear, biases))
    assert n == len(list(model.parameters()))
    spared = build_optimizer(OptimCfg(name="muon", decay_weights_only=True), model, 10).param_groups[-1]
    assert spared["weight_decay"] == 0.0 and spared["lr"] == OptimCfg.lr


def test_its_sgd_groups_step_as_torchs_sgd():
    torch.manual_seed(0)
    ours, theirs = nn.Linear(6, 3), nn.Linear(6, 3)
    theirs.load_state_dict(ours.state_dict())
    cfg = OptimCfg(
        name="muon",
        lr=0.1,
        momentum=0.85,
        nesterov=True,
        weight_decay=0.01,
        muon=MuonCfg(bias_lr=0.03, bias_weight_decay=0.2),
    )
    a = build_optimizer(cfg, ours, 10)
    b = torch.optim.SGD(
        [{"params": [theirs.weight]}, {"params": [theirs.bias], "lr": 0.03, "weight_decay": 0.2}],
        lr=0.1,
        momentum=0.85,
        nesterov=True,
        weight_decay=0.01,
    )
    for _ in range(4):
        x = torch.randn(8, 6)
        for model, opt in ((ours, a), (theirs, b)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    assert torch.equal(ours.weight, theirs.weight) and torch.equal(ours.bias, theirs.bias)


def test_renormalize_fixes_the_filter_banks_norm_and_the_schedule_scales_every_group():
    model = create_model("plain_cnn", depth=2, width=4)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(3.0)
    opt = build_optimizer(OptimCfg(name="muon"), model, 10)
    schedule = build_schedule(from_dict({"schedule": {"name": "cosine"}}).schedule, opt, 1, 10)
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    base = [g["lr"] for g in opt.param_groups]
    for _ in range(5):
        opt.step()
        schedule.step()
    factor = opt.param_groups[0]["lr"] / base[0]
    assert 0 < factor < 1 and [g["lr"] for g in opt.param_groups] == pytest.approx([lr * factor for lr in base])
    for p in opt.param_groups[0]["params"]:
        # Renormalised before the step, then moved by an update of norm about lr sqrt(rows):
        # far from the 3x scale it started at.
        assert abs(p.norm().item() / math.sqrt(p.shape[0]) - 1) < 0.3


def test_a_resumed_muon_run_ends_as_an_uninterrupted_one(data):
    cfg = from_dict({**TINY, "epochs": 3})
    whole = train(cfg, data, "cpu")
    states = []
    train(cfg, data, "cpu", Hooks(checkpoint=states.append, should_stop=lambda: len(states) == 1))
    assert [s["epoch"] for s in states] == [1]
    assert states[0]["optimizer"]["state"]  # the momentum buffers travel with the checkpoint
    # Through a file as ablate.checkpoints reads it (weights_only: Muon's groups hold plain values).
    file = io.BytesIO()
    torch.save(states[0], file)
    file.seek(0)
    resumed = train(cfg, data, "cpu", resume=torch.load(file, weights_only=True))
    assert resumed.status == "complete" and resumed.epochs_done == 3
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed.metrics[key] == whole.metrics[key]
    # Without the buffers the run goes elsewhere: the comparison above can tell.
    states[0]["optimizer"]["state"] = {}
    cold = train(cfg, data, "cpu", resume=states[0])
    assert cold.metrics["train_loss"] != whole.metrics["train_loss"]


def test_a_tiny_net_learns_with_muon_alone_and_fused(data):
    cfgs = [from_dict({**TINY, "epochs": 1, "seed": s}) for s in (0, 1)]
    with one_thread():
        alone = [train(c, data, "cpu") for c in cfgs]
        fused = train_group(cfgs, data, "cpu")
    for a, f in zip(alone, fused):
        assert a.status == f.status == "complete"
        assert a.metrics["test_acc"] > 0.3 and f.metrics["test_acc"] > 0.3  # ten classes: chance is 0.1
        # A grouped convolution rounds otherwise, and the bf16 Newton-Schulz step can turn a
        # last-bit difference into a bf16 one: near, not equal (measured: 1e-3 apart, one image).
        assert abs(a.metrics["train_loss"] - f.metrics["train_loss"]) < 0.01
        assert abs(a.metrics["test_acc"] - f.metrics["test_acc"]) * 128 <= 4
    assert alone[0].metrics["train_loss"] != alone[1].metrics["train_loss"]


def test_muon_keys_leave_earlier_hashes_alone_and_refuse_bad_values():
    assert config_hash(from_dict({})) == "f889fe0e6a1f67cd"  # pinned before optimizer.muon existed
    assert config_hash(from_dict({"optimizer": {"muon": {"lr": 0.3}}})) != "f889fe0e6a1f67cd"
    assert config_hash(from_dict({"switch": {"optimizer": {"muon": {"ns_steps": 5}}}})) != "f889fe0e6a1f67cd"
    for bad, message in [
        ({"muon": {"lr": 0}}, "optimizer.muon.lr must be >0.0, got 0"),
        ({"muon": {"momentum": 1.5}}, "optimizer.muon.momentum must be in [0.0, 1.0], got 1.5"),
        ({"muon": {"ns_steps": 0}}, "optimizer.muon.ns_steps must be in [1, 20], got 0"),
        ({"muon": {"bias_lr": -1}}, "optimizer.muon.bias_lr must be >0.0, got -1"),
        ({"muon": {"bias_weight_decay": -1}}, "optimizer.muon.bias_weight_decay must be >= 0.0, got -1"),
        ({"muon": {"ns_dtype": "float16"}}, "optimizer.muon.ns_dtype must be one of bfloat16, float32, got 'float16'"),
        (
            {"name": "muon", "muon": {"weight_decay": 0.1}},
            "optimizer.muon.weight_decay does nothing with optimizer.muon.renormalize = true",
        ),
    ]:
        with pytest.raises(ConfigError) as err:
            from_dict({"optimizer": bad})
        assert str(err.value).startswith(message) and "\n" not in str(err.value)
    from_dict({"optimizer": {"name": "muon", "muon": {"weight_decay": 0.1, "renormalize": False}}})


def test_ns_dtype_float32_orthogonalises_in_float32_and_keeps_older_muon_hashes():
    m = torch.randn(8, 36, generator=torch.Generator().manual_seed(1))
    exact = orthogonalize(m.double(), 3, dtype=torch.float64)
    fp32, bf16 = orthogonalize(m, 3, dtype=torch.float32), orthogonalize(m, 3)
    assert fp32.dtype == torch.float32 and bf16.dtype == torch.bfloat16
    assert (fp32 - exact).abs().max() < 1e-5 < (bf16.double() - exact).abs().max()
    model = nn.Conv2d(4, 8, 3, bias=False)
    opt = build_optimizer(OptimCfg(name="muon", muon=MuonCfg(ns_dtype="float32")), model, 10)
    assert opt.param_groups[0]["ns_dtype"] == "float32"
    # A muon table written before ns_dtype keeps its hash; float32 is another config.
    tuned = {"optimizer": {"name": "muon", "muon": {"lr": 0.3}}}
    with_default = {"optimizer": {"name": "muon", "muon": {"lr": 0.3, "ns_dtype": "bfloat16"}}}
    assert config_hash(from_dict(with_default)) == config_hash(from_dict(tuned))
    assert config_hash(from_dict({"optimizer": {"name": "muon", "muon": {"lr": 0.3, "ns_dtype": "float32"}}})) != (
        config_hash(from_dict(tuned))
    )
