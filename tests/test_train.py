import math
import time

import pytest
import torch

from ablate.config import ScheduleCfg, from_dict
from ablate.data import synthetic
from ablate.models import create_model
from ablate.optim import lr_factor
from ablate.train import Hooks, autocast_dtype, evaluate, steps_per_epoch, train, train_group

TINY = {
    "epochs": 2,
    "batch_size": 64,
    "data": {"dataset": "synthetic", "aug": {"crop_padding": 2, "flip": True}},
    "model": {"name": "plain_cnn", "depth": 2, "width": 8},
    "optimizer": {"lr": 0.05},
}


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=512, n_test=256)


def test_learns_and_reports_every_epoch(data):
    seen = []
    result = train(from_dict(TINY), data, "cpu", Hooks(epoch=lambda e, m: seen.append((e, m))))
    assert result.status == "complete" and result.epochs_done == 2
    assert [e for e, _ in seen] == [1, 2]
    for _, m in seen:
        assert {"train_loss", "train_acc", "test_loss", "test_acc", "lr", "epoch_time", "images_per_s"} <= set(m)
    assert seen[-1][1]["test_acc"] > 0.2  # ten classes: chance is 0.1
    assert result.metrics == seen[-1][1]
    # The train loss is the epoch's mean batch loss: it falls, and it is of the test loss's size
    # (train and test images come from one distribution here).
    assert seen[1][1]["train_loss"] < seen[0][1]["train_loss"]
    for _, m in seen:
        assert 0.5 < m["train_loss"] / m["test_loss"] < 2, m


def test_precision_auto_is_bf16_on_cuda_and_fp32_on_the_cpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device object needs no GPU
    assert autocast_dtype("auto", cuda) is torch.bfloat16 and autocast_dtype("auto", cpu) is None
    assert autocast_dtype("bf16", cuda) is autocast_dtype("bf16", cpu) is torch.bfloat16
    assert autocast_dtype("fp32", cuda) is autocast_dtype("fp32", cpu) is None


def test_a_runs_wall_time_is_the_time_it_took(data):
    began = time.perf_counter()
    result = train(from_dict({**TINY, "epochs": 1}), data, "cpu")
    assert 0 < result.wall_s <= time.perf_counter() - began


def test_same_seed_same_numbers_on_cpu(data):
    a = train(from_dict(TINY), data, "cpu").metrics
    b = train(from_dict(TINY), data, "cpu").metrics
    keys = ("train_loss", "train_acc", "test_loss", "test_acc")
    assert [a[k] for k in keys] == [b[k] for k in keys]
    c = train(from_dict({**TINY, "seed": 1}), data, "cpu").metrics
    assert a["train_loss"] != c["train_loss"]


def test_a_non_finite_loss_ends_the_run_as_diverged(data):
    cfg = from_dict(
        {
            **TINY,
            "epochs": 3,
            "optimizer": {"lr": 1e12, "weight_decay": 0.0, "momentum": 0.0},
            "model": {"name": "plain_cnn", "depth": 2, "width": 8, "batchnorm": False},
        }
    )
    epochs = []
    result = train(cfg, data, "cpu", Hooks(epoch=lambda e, m: epochs.append(e)))
    assert result.status == "diverged" and result.wall_s > 0
    assert epochs[-1] == result.epochs_done and result.epochs_done < 3
    assert not math.isfinite(result.metrics["train_loss"])


def test_a_non_finite_test_loss_ends_the_run_as_diverged_at_that_epoch(data):
    # lr 1e8: the training loss of epoch 1 is still finite, the test loss is not (issue 20, item 7).
    cfg = from_dict(
        {
            **TINY,
            "train_subset": 64,
            "optimizer": {"lr": 1e8, "nesterov": True},
            "model": {"name": "plain_cnn", "depth": 2, "width": 4},
        }
    )
    seen = []
    result = train(cfg, data, "cpu", Hooks(epoch=lambda e, m: seen.append((e, dict(m)))))
    assert result.status == "diverged" and result.epochs_done == 1
    assert math.isfinite(seen[0][1]["train_loss"]) and not math.isfinite(seen[0][1]["test_loss"])
    assert [e for e, _ in seen] == [1] and result.metrics == seen[-1][1]


def test_evaluation_sees_the_averaged_weights_and_training_the_live_ones(data):
    # An EMA changes what is evaluated, never what is trained.
    plain = train(from_dict(TINY), data, "cpu")
    averaged = train(from_dict({**TINY, "averaging": {"name": "ema", "every": 1, "decay": 0.9}}), data, "cpu")
    assert averaged.metrics["train_loss"] == plain.metrics["train_loss"]
    assert averaged.metrics["test_loss"] != plain.metrics["test_loss"]


def test_bf16_precision_trains_and_evaluates_under_autocast_on_the_cpu(data):
    # "auto" is fp32 on the CPU; "bf16" asks for autocast there too, evaluation included.
    states, first = [], {}
    bf16 = train(
        from_dict({**TINY, "precision": "bf16"}),
        data,
        "cpu",
        Hooks(checkpoint=states.append, epoch=lambda e, m: first.setdefault("test_loss", m["test_loss"])),
    )
    fp32 = train(from_dict({**TINY, "precision": "fp32"}), data, "cpu")
    assert bf16.metrics["train_loss"] != fp32.metrics["train_loss"]
    model = create_model("plain_cnn", num_classes=10, depth=2, width=8)
    model.load_state_dict(states[0]["model"])  # as the first epoch left it
    assert evaluate(model, data.test_x, data.test_y, torch.bfloat16)[0] == first["test_loss"]
    assert evaluate(model, data.test_x, data.test_y, None)[0] != first["test_loss"]


def test_should_stop_returns_early(data):
    calls = []
    result = train(from_dict(TINY), data, "cpu", Hooks(should_stop=lambda: calls.append(1) or len(calls) >= 3))
    assert result.status == "stopped" and result.epochs_done == 0 and len(calls) == 3


def test_train_subset_shrinks_the_epoch(data):
    cfg = from_dict({**TINY, "epochs": 1, "batch_size": 32, "train_subset": 64})
    seen = []
    result = train(cfg, data, "cpu", Hooks(should_stop=lambda: seen.append(1) and False))
    assert result.status == "complete" and len(seen) == 64 // 32


@pytest.mark.parametrize(("subset", "batch"), [(None, 64), (64, 32), (100, 32), (40, 64)])
def test_steps_per_epoch_counts_the_steps_train_takes(data, subset, batch):
    # Progress within an epoch is shown against this count, before the run starts.
    cfg = from_dict({**TINY, "epochs": 1, "batch_size": batch, "train_subset": subset})
    seen = []
    train(cfg, data, "cpu", Hooks(should_stop=lambda: seen.append(1) and False))
    assert steps_per_epoch(cfg, len(data.train_y)) == len(seen)
    assert steps_per_epoch(cfg, 0) == 0  # no images, no steps


@pytest.mark.parametrize("name", ["constant", "step", "cosine", "onecycle"])
def test_schedules_start_and_end_where_they_should(name):
    cfg = ScheduleCfg(name=name, step_every=1, gamma=0.5, final_frac=0.0)
    total, per_epoch = 100, 10
    factors = [lr_factor(cfg, s, total, per_epoch) for s in range(total)]
    assert all(0 <= f <= 1 for f in factors)
    if name == "constant":
        assert set(factors) == {1.0}
    if name == "step":
        assert factors[0] == 1.0 and factors[10] == 0.5 and factors[25] == 0.25
    if name == "cosine":
        assert factors[0] == 1.0 and factors[-1] < 0.01
    if name == "onecycle":
        assert max(factors) == pytest.approx(1.0) and factors.index(max(factors)) == 25 and factors[-1] < 0.05


def test_the_loop_reads_nothing_back_from_the_device_per_step(data, monkeypatch):
    """Metrics are gathered once per epoch: a value read back to the host (an .item(), a bool
    of a tensor) inside the loop would make the CPU wait for the GPU at every step."""
    reads = []
    for name in ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__"):
        real = getattr(torch.Tensor, name)

        def counted(self, *a, _real=real, **k):
            reads.append(1)
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, counted)
    for seeds in ([0], [0, 1]):  # a lone run and a fused group
        counts = []
        for steps in (2, 4):
            cfgs = [from_dict({**TINY, "epochs": 1, "seed": s, "train_subset": steps * 64}) for s in seeds]
            reads.clear()
            train_group(cfgs, data, "cpu")
            counts.append(len(reads))
        assert counts[0] == counts[1] > 0, counts


def test_a_run_projected_shorter_than_checkpoint_after_s_is_not_checkpointed(data):
    cfg = from_dict({**TINY, "epochs": 3, "train_subset": 128})
    for after_s, epochs in ((0.0, [1, 2]), (3600.0, [])):  # a tiny run lasts well under an hour
        states = []
        train(cfg, data, "cpu", Hooks(checkpoint=states.append, checkpoint_after_s=after_s))
        assert [s["epoch"] for s in states] == epochs


def test_warmup_ramps_up_linearly():
    cfg = ScheduleCfg(name="cosine", warmup_epochs=1)
    assert [lr_factor(cfg, s, 100, 10) for s in range(3)] == pytest.approx([0.1, 0.2, 0.3])


def test_a_resumed_run_ends_as_an_uninterrupted_one(data):
    cfg = from_dict({**TINY, "epochs": 3, "model": {**TINY["model"], "dropout": 0.3}})
    whole = train(cfg, data, "cpu")
    states = []
    train(
        from_dict({**TINY, "epochs": 3, "model": {**TINY["model"], "dropout": 0.3}}),
        data,
        "cpu",
        Hooks(checkpoint=states.append, should_stop=lambda: len(states) == 1),
    )
    assert [s["epoch"] for s in states] == [1]
    resumed = train(cfg, data, "cpu", resume=states[0])
    assert resumed.status == "complete" and resumed.epochs_done == 3
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed.metrics[key] == whole.metrics[key]


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "adadelta", "ranger", "ranger21"])
def test_every_optimizer_trains(name, data):
    lr = {"sgd": 0.05, "adadelta": 1.0}.get(name, 1e-3)
    cfg = from_dict({**TINY, "epochs": 1, "train_subset": 256, "optimizer": {"name": name, "lr": lr}})
    result = train(cfg, data, "cpu")
    assert result.status == "complete" and math.isfinite(result.metrics["train_loss"])


def test_decay_weights_only_spares_biases_and_norms():
    from ablate.config import OptimCfg
    from ablate.models import create_model
    from ablate.optim import build_optimizer

    model = create_model("plain_cnn", depth=2, width=4)
    opt = build_optimizer(OptimCfg(name="adadelta", lr=1.0, weight_decay=0.01, decay_weights_only=True), model, 10)
    decayed, spared = opt.param_groups
    assert decayed["weight_decay"] == 0.01 and spared["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decayed["params"]) and all(p.ndim == 1 for p in spared["params"])
    assert len(decayed["params"]) + len(spared["params"]) == len(list(model.parameters()))


def test_switch_changes_optimizer_and_resumes_across_it(data):
    d = {
        **TINY,
        "epochs": 3,
        "optimizer": {"name": "adam", "lr": 1e-3},
        "switch": {"at_epoch": 1, "optimizer": {"name": "sgd", "lr": 0.01}, "schedule": {"name": "cosine"}},
    }
    lrs, states = [], []
    whole = train(from_dict(d), data, "cpu", Hooks(epoch=lambda e, m: lrs.append(m["lr"]), checkpoint=states.append))
    assert lrs[0] == pytest.approx(1e-3) and lrs[1] == pytest.approx(0.01)  # each phase starts at its own lr
    assert [s["phase"] for s in states] == [1, 2]
    for state in states:  # from the first phase, and from within the second
        resumed = train(from_dict(d), data, "cpu", resume=state)
        assert resumed.metrics["test_loss"] == whole.metrics["test_loss"]


def test_switch_must_fall_inside_the_run():
    from ablate.config import ConfigError

    with pytest.raises(ConfigError, match="switch.at_epoch must be below epochs"):
        from_dict({**TINY, "switch": {"at_epoch": 2}})


def test_the_pil_pipeline_learns_as_the_device_pipeline_does(data, monkeypatch):
    from ablate import pil_pipeline

    given = []
    real = pil_pipeline.pil_transform
    monkeypatch.setattr(pil_pipeline, "pil_transform", lambda aug: given.append(aug) or real(aug))
    aug = {"crop_padding": 2, "flip": True, "cutout": 4}
    acc, loss = {}, {}
    for pipeline in ("device", "pil"):
        cfg = from_dict({**TINY, "data": {"dataset": "synthetic", "pipeline": pipeline, "aug": aug}})
        result = train(cfg, data, "cpu")
        assert result.status == "complete" and math.isfinite(result.metrics["train_loss"])
        acc[pipeline], loss[pipeline] = result.metrics["test_acc"], result.metrics["train_loss"]
    assert given == [cfg.data.aug]  # the PIL images get the configured augmentation
    assert loss["pil"] != loss["device"]  # and they are what it trains on (another shuffle, other draws)
    # Ten classes, chance is 0.1; both reach about 0.65 in these two epochs.
    assert acc["pil"] > 0.4 and abs(acc["pil"] - acc["device"]) < 0.15, acc
