"""Label smoothing in both forms against targets built by hand."""

import pytest
import torch

from ablate.config import ConfigError, LossCfg, config_hash, from_dict
from ablate.data import synthetic
from ablate.loss import build_loss
from ablate.train import train


def smoothed_targets(y: torch.Tensor, num_classes: int, eps: float, form: str) -> torch.Tensor:
    if form == "report":  # Eq. 1: 1 - eps on the true class, eps / (C - 1) on every other
        q = torch.full((len(y), num_classes), eps / (num_classes - 1), dtype=torch.float64)
        q[torch.arange(len(y)), y] = 1 - eps
    else:  # PyTorch: eps spread over all C classes, the true one included
        q = torch.full((len(y), num_classes), eps / num_classes, dtype=torch.float64)
        q[torch.arange(len(y)), y] = 1 - eps + eps / num_classes
    return q


@pytest.mark.parametrize("form", ["pytorch", "report"])
@pytest.mark.parametrize("num_classes, eps", [(10, 0.1), (10, 0.3), (3, 0.5), (10, 0.9)])
def test_the_loss_is_the_cross_entropy_against_the_smoothed_targets(form, num_classes, eps):
    g = torch.Generator().manual_seed(num_classes)
    logits = 3 * torch.randn(64, num_classes, generator=g, dtype=torch.float64)
    y = torch.randint(num_classes, (64,), generator=g)
    q = smoothed_targets(y, num_classes, eps, form)
    assert torch.allclose(q.sum(1), torch.ones(64, dtype=torch.float64))
    expected = -(q * torch.log_softmax(logits, 1)).sum(1).mean()
    got = build_loss(LossCfg(label_smoothing=eps, smoothing_form=form), num_classes)(logits, y)
    assert got.item() == pytest.approx(expected.item(), rel=1e-12)


def test_the_two_forms_differ_and_agree_at_zero():
    logits, y = torch.randn(8, 10, generator=torch.Generator().manual_seed(0)), torch.arange(8)
    loss = {form: build_loss(LossCfg(0.2, form), 10)(logits, y).item() for form in ("pytorch", "report")}
    assert loss["pytorch"] != pytest.approx(loss["report"])
    zero = {form: build_loss(LossCfg(0.0, form), 10)(logits, y).item() for form in ("pytorch", "report")}
    assert zero["pytorch"] == zero["report"]


def test_the_report_form_refuses_more_smoothing_than_it_can_give():
    from_dict({"loss": {"label_smoothing": 0.9, "smoothing_form": "report"}})  # (C-1)/C: uniform targets
    with pytest.raises(
        ConfigError,
        match=r'^loss.label_smoothing must be <= \(C-1\)/C = 0.9 for loss.smoothing_form = "report" with C = 10',
    ):
        from_dict({"data": {"dataset": "synthetic"}, "loss": {"label_smoothing": 0.95, "smoothing_form": "report"}})
    from_dict({"loss": {"label_smoothing": 0.95}})  # PyTorch's form takes up to 1
    with pytest.raises(ConfigError, match="C = 3 classes, got 0.8"):  # data with fewer classes, at build time
        build_loss(LossCfg(0.8, "report"), 3)
    with pytest.raises(ConfigError, match="loss.smoothing_form must be one of pytorch, report"):
        from_dict({"loss": {"smoothing_form": "eq1"}})


def test_smoothing_form_is_left_out_of_the_hash_at_its_default():
    cfg = from_dict({"loss": {"label_smoothing": 0.1}})
    assert config_hash(from_dict({"loss": {"label_smoothing": 0.1, "smoothing_form": "pytorch"}})) == config_hash(cfg)
    assert config_hash(from_dict({"loss": {"label_smoothing": 0.1, "smoothing_form": "report"}})) != config_hash(cfg)


def test_the_trainer_trains_on_the_form_it_is_given():
    data = synthetic(n_train=128, n_test=64)
    base = {
        "epochs": 1,
        "batch_size": 64,
        "data": {"dataset": "synthetic"},
        "model": {"name": "plain_cnn", "depth": 1, "width": 4},
    }
    losses = {
        form: train(from_dict({**base, "loss": {"label_smoothing": 0.3, "smoothing_form": form}}), data, "cpu").metrics[
            "train_loss"
        ]
        for form in ("pytorch", "report")
    }
    assert losses["pytorch"] != losses["report"]
