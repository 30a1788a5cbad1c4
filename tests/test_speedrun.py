"""The speedrun recipe's pieces, each checked for what it must do on tiny inputs (CPU only):
patch whitening, the fixed-scale BN, test-time augmentation, weight averaging, alternating
flip and reflect padding; then the study itself for one epoch."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ablate.augment import alternating_flips, augment, normalize
from ablate.averaging import WeightAverage
from ablate.config import AugCfg, AverageCfg, ConfigError, OptimCfg, config_hash, from_dict, to_dict
from ablate.data import synthetic
from ablate.models import count_params, create_model
from ablate.models.speednet import PatchWhitening, ShiftNorm
from ablate.optim import build_optimizer
from ablate.studies import expand, load
from ablate.train import Hooks, evaluate, train
from ablate.tta import tta_logits

SMALL_NET = {"name": "speednet", "widths": [8, 16, 16]}
TINY = {
    "epochs": 3,
    "batch_size": 32,
    "data": {
        "dataset": "synthetic",
        "aug": {"crop_padding": 2, "pad_mode": "reflect", "flip": True, "flip_mode": "alternate"},
    },
    "model": SMALL_NET,
    "optimizer": {"lr": 0.2, "momentum": 0.85, "nesterov": True, "weight_decay": 1e-3},
    "schedule": {"name": "onecycle", "peak_at": 0.25, "final_frac": 0.1},
}


@pytest.fixture(scope="module")
def data():
    return synthetic(n_train=96, n_test=32)


def correlated_images(n: int = 32, seed: int = 0) -> torch.Tensor:
    """Noise with correlated channels and neighbouring pixels, as natural images have."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 17, 17, generator=g)
    x = torch.einsum("ij,njhw->nihw", torch.tensor([[1.0, 0.8, 0.3], [0.2, 1.0, 0.6], [0.5, 0.1, 1.0]]), x)
    x = x[..., 1:, 1:] + 0.7 * x[..., :-1, :-1] + 0.4 * x[..., 1:, :-1]  # spatial correlation
    return x + torch.tensor([0.3, -0.2, 0.1]).view(1, 3, 1, 1)


def patch_covariance(out: torch.Tensor) -> torch.Tensor:
    flat = out.permute(0, 2, 3, 1).reshape(-1, out.shape[1]).double()
    flat = flat - flat.mean(0)
    return flat.T @ flat / len(flat)


# ----------------------------------------------------------------------- whitening


def test_whitening_makes_the_patch_covariance_the_identity():
    x = correlated_images()
    before = patch_covariance(F.unfold(x, 2).view(len(x), 12, 15, 15))
    assert (before - torch.eye(12, dtype=torch.float64)).abs().max() > 0.5  # far from white to start with
    layer = PatchWhitening(3, 2, eps=1e-9)
    layer.init_from_data(x)
    w = layer.weight
    assert w.shape == (24, 3, 2, 2)
    assert torch.equal(w[12:], -w[:12])  # each filter and its negative
    cov = patch_covariance(F.conv2d(x, w[:12]))
    assert torch.allclose(cov, torch.eye(12, dtype=torch.float64), atol=1e-4)


def test_whitening_eps_damps_the_smallest_directions_only():
    x = correlated_images()
    layer = PatchWhitening(3, 2, eps=5e-4)
    layer.init_from_data(x)
    variances = patch_covariance(F.conv2d(x, layer.weight[:12])).diagonal()
    assert (variances <= 1).all() and variances[0] > 0.999  # largest-variance direction first


def test_whitening_weights_and_bn_scales_are_frozen_the_rest_trains(data):
    torch.manual_seed(0)
    model = create_model("speednet", widths=[8, 16, 16])
    model.init_from_data(data.train_x[:64].float() / 255)
    whiten = model[0]
    norms = [m for m in model.modules() if isinstance(m, ShiftNorm)]
    assert len(norms) == 6
    optimizer = build_optimizer(OptimCfg(lr=0.1, weight_decay=5e-4), model, 10)
    trained = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert id(whiten.weight) not in trained and id(whiten.bias) in trained
    assert not any(id(n.weight) in trained for n in norms) and all(id(n.bias) in trained for n in norms)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = data.train_x[:32].float() / 255, data.train_y[:32]
    for _ in range(3):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    after = model.state_dict()
    assert torch.equal(after["0.weight"], before["0.weight"]) and not torch.equal(after["0.bias"], before["0.bias"])
    assert all(torch.equal(n.weight, torch.ones_like(n.weight)) for n in norms)
    assert not torch.equal(norms[0].bias, before["2.2.bias"])


def test_head_std_rescales_the_heads_default_init():
    torch.manual_seed(0)
    default = create_model("speednet", widths=[8, 16, 16])[-2].weight
    torch.manual_seed(0)
    unit = create_model("speednet", widths=[8, 16, 16], head_std=1.0)[-2].weight
    assert unit.std().item() == pytest.approx(1.0, rel=1e-5) and default.std() < 0.5  # 1/sqrt(16) bound
    assert torch.allclose(unit, default / default.std())  # the same draw, rescaled
    for bad in (0.0, -1.0):
        with pytest.raises(ConfigError, match="model.head_std must be >0"):
            expand(load("speedrun"), [("model.head_std", bad)])


def test_convs_start_as_the_identity_on_their_input_channels():
    model = create_model("speednet", widths=[8, 16, 16])
    conv = model[2][0]  # 24 whitened channels -> 8
    centre = conv.weight[:, :, 1, 1]
    assert torch.equal(centre[:8, :8], torch.eye(8)) and conv.weight[:8].abs().sum() == 8
    assert not torch.equal(
        create_model("speednet", widths=[8, 16, 16], dirac=False)[2][0].weight[:8, :8, 1, 1], torch.eye(8)
    )


@pytest.mark.parametrize("scale", [1.0, 16.0])
def test_bias_lr_scale_speeds_up_the_bn_shift_not_its_decay(scale):
    x = torch.randn(8, 4, 5, 5)

    def one_step(weight_decay: float, with_loss: bool) -> torch.Tensor:
        norm = ShiftNorm(4, momentum=0.4, bias_lr_scale=scale)
        with torch.no_grad():
            norm.bias.fill_(0.5 / norm.bias_factor)  # the effective shift starts at 0.5 either way
        optimizer = torch.optim.SGD([norm.bias], lr=0.01, weight_decay=weight_decay)
        (norm(x).sum() if with_loss else (norm.bias * 0).sum()).backward()
        optimizer.step()
        return norm.bias.detach() * norm.bias_factor - 0.5  # how far the effective shift moved

    assert torch.allclose(one_step(0.0, True), torch.full((4,), -0.01 * 200 * scale))  # 200 = 8*5*5 outputs
    assert torch.allclose(one_step(0.1, False), torch.full((4,), -0.01 * 0.1 * 0.5))  # decay as if unscaled


def test_bn_momentum_is_the_weight_of_the_newest_batch():
    norm = ShiftNorm(2, momentum=0.4)
    x = torch.randn(16, 2, 3, 3) * 3 + 5
    norm(x)
    assert torch.allclose(norm.running_mean, 0.4 * x.mean((0, 2, 3)))


def test_the_trainer_initialises_from_data_on_a_fresh_run_only(data, monkeypatch):
    calls = []
    original = PatchWhitening.init_from_data
    monkeypatch.setattr(PatchWhitening, "init_from_data", lambda self, x: calls.append(x.shape) or original(self, x))
    states = []
    train(from_dict(TINY), data, "cpu", Hooks(checkpoint=states.append, should_stop=lambda: len(states) == 1))
    assert calls == [(96, 3, 32, 32)]  # normalised training images, float
    train(from_dict(TINY), data, "cpu", resume=states[0])
    assert len(calls) == 1


# ------------------------------------------------------------- test-time augmentation


class Symmetric(nn.Module):
    """A net whose logits are exactly the same for an image and its mirror image."""

    def __init__(self):
        super().__init__()
        self.net = create_model("plain_cnn", depth=2, width=4)

    def forward(self, x):
        return self.net(x) + self.net(x.flip(3))


def test_flip_tta_changes_nothing_for_a_flip_symmetric_model(data):
    torch.manual_seed(0)
    model = Symmetric()
    plain = evaluate(model, data.test_x, data.test_y)
    flipped = evaluate(model, data.test_x, data.test_y, tta="flip")
    assert flipped == plain


def test_flip_tta_changes_the_evaluation_of_an_asymmetric_model(data):
    # A plain CNN tells an image from its mirror image: averaging the two must show.
    torch.manual_seed(0)
    model = create_model("plain_cnn", depth=2, width=4).eval()
    x, y = data.test_x, data.test_y
    with torch.no_grad():
        xn = normalize(x)
        assert not torch.allclose(model(xn), model(xn.flip(3)), atol=1e-3)
        logits = (model(xn) + model(xn.flip(3))) / 2
    want_loss, want_acc = F.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item()
    plain_loss, _ = evaluate(model, x, y)
    loss, acc = evaluate(model, x, y, tta="flip")
    assert loss == pytest.approx(want_loss, rel=1e-5) and acc == pytest.approx(want_acc)
    assert abs(loss - plain_loss) > 1e-4


def test_the_trainer_evaluates_with_the_configured_tta(data):
    seen = {}
    for tta in ("none", "flip"):
        cfg = from_dict(
            {**TINY, "epochs": 1, "model": {"name": "plain_cnn", "depth": 2, "width": 4}, "eval": {"tta": tta}}
        )
        seen[tta] = train(cfg, data, "cpu").metrics
    assert seen["flip"]["train_loss"] == seen["none"]["train_loss"]  # the same training ...
    assert seen["flip"]["test_loss"] != seen["none"]["test_loss"]  # ... evaluated another way


def mirror_rows(n: int, shift: int) -> list[int]:
    """Source rows of an image moved down by ``shift`` (+1 or -1), mirrored at the border."""
    return [abs(i) if i < n else 2 * (n - 1) - i for i in (r - shift for r in range(n))]


@pytest.mark.parametrize("mode", ["none", "flip", "flip_translate"])
def test_tta_logits_are_the_weighted_mean_over_the_views(mode):
    torch.manual_seed(0)
    model = create_model("plain_cnn", depth=2, width=4).eval()
    x = torch.randn(5, 3, 32, 32)
    f = lambda v: model(v)  # noqa: E731
    pair = lambda v: (f(v) + f(v.flip(3))) / 2  # noqa: E731
    down, up = mirror_rows(32, 1), mirror_rows(32, -1)
    expected = {
        "none": f(x),
        "flip": pair(x),
        "flip_translate": pair(x) / 2 + (pair(x[:, :, down][..., down]) + pair(x[:, :, up][..., up])) / 4,
    }[mode]
    with torch.no_grad():
        assert torch.allclose(tta_logits(model, x, mode), expected, atol=1e-5)


def test_tta_is_a_checked_config_key():
    assert from_dict({"eval": {"tta": "flip_translate"}}).eval.tta == "flip_translate"
    with pytest.raises(ConfigError, match="eval.tta must be one of"):
        from_dict({"eval": {"tta": "rotate"}})


def test_eval_every_skips_epochs_but_never_the_last(data):
    seen = []
    train(
        from_dict({**TINY, "eval": {"every": 2}}),
        data,
        "cpu",
        Hooks(epoch=lambda e, m: seen.append((e, "test_acc" in m))),
    )
    assert seen == [(1, False), (2, True), (3, True)]


# ------------------------------------------------------------------ weight averaging


def test_lookahead_moves_the_average_and_puts_the_weights_on_it():
    model = nn.Linear(3, 2)
    avg = WeightAverage(AverageCfg(name="lookahead", every=2, decay=0.5, ramp_power=0.0), model, total_steps=5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update(model, 1)  # not an update step
    assert torch.equal(model.weight, start + 1)
    avg.update(model, 2)  # keeps 0.5**2 of the average
    assert torch.allclose(model.weight, start + 0.75) and torch.allclose(avg.average["weight"], start + 0.75)
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update(model, 5)  # the last step always updates
    assert torch.allclose(model.weight, start + 0.75 + 0.75)


def test_the_ramp_barely_averages_early_steps():
    avg = WeightAverage(AverageCfg(name="lookahead", every=5, decay=0.95, ramp_power=3.0), nn.Linear(1, 1), 100)
    assert avg.decay(5) == pytest.approx(0.95**5 * 0.05**3) and avg.decay(100) == pytest.approx(0.95**5)


def test_ema_is_swapped_in_for_evaluation_and_out_again():
    model = nn.Linear(3, 2)
    avg = WeightAverage(AverageCfg(name="ema", every=1, decay=0.5, ramp_power=0.0), model, total_steps=10)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    avg.update(model, 1)
    assert torch.equal(model.weight, start + 1)  # training is left alone
    with avg.applied(model):
        assert torch.allclose(model.weight, start + 0.5)
    assert torch.equal(model.weight, start + 1)


@pytest.mark.parametrize("name", ["lookahead", "ema"])
def test_a_resumed_averaged_run_ends_as_an_uninterrupted_one(name, data):
    d = {**TINY, "averaging": {"name": name, "every": 2, "decay": 0.9}, "eval": {"tta": "flip"}}
    whole = train(from_dict(d), data, "cpu")
    states = []
    train(from_dict(d), data, "cpu", Hooks(checkpoint=states.append, should_stop=lambda: len(states) == 1))
    assert states[0]["average"] is not None
    floats = {k for k, v in states[0]["model"].items() if v.is_floating_point()}  # BN's batch counter is not averaged
    assert set(states[0]["average"]["average"]) == floats
    resumed = train(from_dict(d), data, "cpu", resume=states[0])
    for key in ("train_loss", "train_acc", "test_loss", "test_acc"):
        assert resumed.metrics[key] == whole.metrics[key]


# ------------------------------------------------------- alternating flip, reflect crop


def test_alternating_flip_flips_each_image_on_alternate_epochs():
    flags = [alternating_flips(1000, seed=3, epoch=e) for e in range(1, 6)]
    assert 400 < int(flags[0].sum()) < 600  # a fair coin per image in the first epoch
    for e in range(4):
        assert torch.equal(flags[e + 1], ~flags[e])
    assert not torch.equal(alternating_flips(1000, seed=4, epoch=1), flags[0])


def test_augment_flips_exactly_the_flagged_images():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (16, 3, 8, 8), generator=g, dtype=torch.uint8)
    flags = alternating_flips(16, seed=0, epoch=2)
    out = augment(x, AugCfg(flip=True, flip_mode="alternate"), torch.Generator().manual_seed(1), flags)
    for i in range(16):
        assert torch.equal(out[i], x[i].flip(2) if flags[i] else x[i])
    with pytest.raises(ValueError, match="one flip flag per image"):
        augment(x, AugCfg(flip=True, flip_mode="alternate"), g)


@pytest.mark.parametrize("pad", [1, 2, 4])
def test_reflect_crop_is_a_window_of_the_reflect_padded_image(pad):
    x = torch.randint(0, 256, (32, 3, 10, 10), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    out = augment(x, AugCfg(crop_padding=pad, pad_mode="reflect"), torch.Generator().manual_seed(5))
    padded = F.pad(x.float(), (pad,) * 4, mode="reflect")
    windows = {(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)}
    seen = set()
    for i in range(len(x)):
        matches = [
            (dy, dx) for dy, dx in windows if torch.equal(out[i].float(), padded[i, :, dy : dy + 10, dx : dx + 10])
        ]
        assert len(matches) == 1
        seen.add(matches[0])
    assert len(seen) > 1  # the offsets vary


def test_the_pil_pipeline_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match="need data.pipeline"):
        from_dict({"data": {"pipeline": "pil", "aug": {"flip": True, "flip_mode": "alternate"}}})
    with pytest.raises(ConfigError, match="data.aug.pad_mode must be one of"):
        from_dict({"data": {"aug": {"pad_mode": "edge"}}})


# ------------------------------------------------------------------- identity, study


def test_new_keys_at_their_defaults_leave_every_existing_hash_alone():
    # Pinned before eval, averaging, flip_mode and pad_mode existed.
    assert config_hash(from_dict({})) == "f889fe0e6a1f67cd"
    assert {p.config_hash for p in expand(load("fast_sgd"))} == {"e41449903a2a13a9"}
    cfg = from_dict({})
    for key, value in [
        ("eval", {"tta": "flip"}),
        ("averaging", {"name": "ema"}),
        ("data", {"aug": {"pad_mode": "reflect"}}),
        ("data", {"aug": {"flip_mode": "alternate"}}),
    ]:
        assert config_hash(from_dict({key: value})) != config_hash(cfg)
    assert "eval" in to_dict(cfg) and "averaging" in to_dict(cfg)  # still stored with every run
    # speednet's later arguments at their defaults build what it built, under the same hash.
    net = {"name": "speednet", "widths": [8, 16, 16]}
    assert config_hash(from_dict({"model": {**net, "head_std": None, "whiten_bias_steps": None}})) == config_hash(
        from_dict({"model": net})
    )
    assert config_hash(from_dict({"model": {**net, "whiten_bias_steps": 75}})) != config_hash(from_dict({"model": net}))


def test_speedrun_legacy_study_keeps_its_hash_and_runs_an_epoch_on_cpu():
    study = load("speedrun_legacy")
    assert study.size == 1 and study.reported is None and "94.0%" in study.description
    (point,) = expand(study)
    assert point.config_hash == "cb9f93bd915cd611"  # what `speedrun` had before it became the record's
    cfg = point.config
    assert cfg.model.name == "speednet" and cfg.averaging.name == "lookahead" and cfg.eval.tta == "flip_translate"
    assert cfg.data.aug.flip_mode == "alternate" and cfg.data.aug.pad_mode == "reflect"
    assert count_params(create_model(cfg.model.name, **cfg.model.args)) == 1_972_792
    overrides = [("epochs", 1), ("batch_size", 32), ("train_subset", 64), ("data.dataset", "synthetic")]
    (point,) = expand(study, overrides)
    result = train(point.config, synthetic(n_train=64, n_test=32), "cpu")
    assert result.status == "complete" and result.epochs_done == 1 and 0 <= result.metrics["test_acc"] <= 1


def test_speedrun_study_is_the_records_recipe_and_runs_an_epoch_on_cpu():
    study = load("speedrun")
    assert study.size == 1 and study.reported is None and "94.01%" in study.description
    assert any("f1c599c" in line for line in study.assumed)
    (point,) = expand(study)
    cfg = point.config
    assert (cfg.epochs, cfg.batch_size, cfg.averaging.name, cfg.schedule.name) == (8, 2000, "none", "linear")
    assert (cfg.eval.tta, cfg.eval.every, cfg.loss.label_smoothing) == ("flip_translate", 8, 0.2)
    args = cfg.model.args
    assert (args["head_std"], args["whiten_bias_steps"], args["bias_lr_scale"]) == (1.0, 75, 1.0)
    assert args["logit_scale"] == 1 / 256 and args["bn_momentum"] == 0.4
    opt = cfg.optimizer
    assert opt.name == "muon" and (opt.muon.lr, opt.muon.momentum, opt.muon.ns_steps) == (0.24, 0.6, 3)
    # The record's summed-loss lrs x 2000 and decays / 2000: lr x decay stays 2e-6 x 2000 a step.
    assert opt.lr == pytest.approx(0.67 * 2000) and opt.muon.bias_lr == pytest.approx(0.053 * 2000)
    assert opt.lr * opt.weight_decay == pytest.approx(4e-3, rel=1e-4)
    assert opt.muon.bias_lr * opt.muon.bias_weight_decay == pytest.approx(4e-3, rel=1e-4)
    assert count_params(create_model(cfg.model.name, **args)) == 1_972_792
    overrides = [("epochs", 1), ("batch_size", 32), ("train_subset", 64), ("data.dataset", "synthetic")]
    overrides += [("model.widths", [8, 16, 16]), ("model.whiten_bias_steps", 1)]  # tiny; the freeze inside
    (point,) = expand(study, overrides)
    result = train(point.config, synthetic(n_train=64, n_test=32), "cpu")
    assert result.status == "complete" and result.epochs_done == 1 and 0 <= result.metrics["test_acc"] <= 1
