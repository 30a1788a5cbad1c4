"""Each probe against a hand computation on a tiny model."""

import numpy as np
import pytest
import torch
from torch import nn

from ablate.config import from_dict
from ablate.data import synthetic
from ablate.probes import first_kernels, loss_along_gradient, relative_grad_norms
from ablate.train import Hooks, train


def tiny_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 2, 3, bias=False), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 2 * 2, 3))


def test_relative_gradient_norm_by_hand():
    net = tiny_net()
    conv = net[0]
    conv.weight.grad = torch.full_like(conv.weight, 0.5)
    expected = (0.5 * conv.weight.numel() ** 0.5) / conv.weight.detach().norm().item()
    assert relative_grad_norms(net) == {"relgrad.conv1": pytest.approx(expected)}


def test_relative_gradient_norm_names_every_conv_in_order():
    net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1))
    net(torch.randn(1, 1, 2, 2)).sum().backward()
    assert list(relative_grad_norms(net)) == ["relgrad.conv1", "relgrad.conv2", "relgrad.conv3"]


def test_loss_along_gradient_by_hand_and_leaves_the_model_as_it_was():
    net = tiny_net().train()
    x, y = torch.randn(4, 1, 4, 4), torch.tensor([0, 1, 2, 0])
    loss_fn = nn.CrossEntropyLoss()
    loss_fn(net(x), y).backward()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    got = loss_along_gradient(net, loss_fn, x, y, lr=0.1, multiples=(1.0, 2.0))
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # weights and BN running stats restored exactly
    # By hand: a copy stepped by 2 * lr along the gradient.
    moved = tiny_net()
    moved.load_state_dict(before)
    with torch.no_grad():
        for p, q in zip(moved.parameters(), net.parameters()):
            p -= 0.2 * q.grad
    assert got["landscape.x2"] == pytest.approx(loss_fn(moved.train()(x), y).item(), rel=1e-6)
    # The band over the step sizes contains the loss where the weights are (eta = 0).
    assert set(got) == {"landscape.x0", "landscape.x1", "landscape.x2"}
    assert min(got.values()) <= got["landscape.x0"] <= max(got.values())
    assert got["landscape.x0"] == pytest.approx(loss_fn(tiny_net().train()(x), y).item(), rel=1e-6)


def test_first_kernels_are_a_copy_of_the_first_conv():
    net = tiny_net()
    k = first_kernels(net)
    assert k.shape == (2, 1, 3, 3) and k.dtype == np.float32
    assert np.array_equal(k, net[0].weight.detach().numpy())


TINY = {
    "epochs": 2,
    "batch_size": 64,
    "data": {"dataset": "synthetic"},
    "model": {"name": "plain_cnn", "depth": 2, "width": 8},
}


def test_the_trainer_records_probes_when_asked():
    data = synthetic(n_train=256, n_test=64)
    probes, artifacts = [], {}
    cfg = from_dict(
        {**TINY, "probes": {"grad_norm_every": 2, "landscape_every": 4, "landscape_steps": [1, 2], "kernels": True}}
    )
    train(cfg, data, "cpu", Hooks(probe=lambda s, v: probes.append((s, v)), artifact=artifacts.__setitem__))
    steps = 2 * (256 // 64)
    grad_steps = [s for s, v in probes if "relgrad.conv1" in v]
    land_steps = [s for s, v in probes if "landscape.x1" in v]
    assert grad_steps == list(range(2, steps + 1, 2)) and land_steps == list(range(4, steps + 1, 4))
    assert all(set(v) == {"relgrad.conv1", "relgrad.conv2"} for s, v in probes if "relgrad.conv1" in v)
    assert artifacts["kernels.conv1"].shape == (8, 3, 3, 3)


def test_probes_change_nothing_about_the_run():
    data = synthetic(n_train=256, n_test=64)
    plain = train(from_dict(TINY), data, "cpu").metrics
    cfg = from_dict({**TINY, "probes": {"grad_norm_every": 1, "landscape_every": 1}})
    probed = train(cfg, data, "cpu", Hooks(probe=lambda s, v: None)).metrics
    for k in ("train_loss", "test_loss", "test_acc"):
        assert probed[k] == plain[k]
