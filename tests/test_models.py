"""Every registered model is tested for free: forward, backward, defaults."""

import math

import pytest
import torch

from ablate import plugins
from ablate.config import ConfigError
from ablate.models import count_params, create_model, default_args, list_models, resolve_args
from ablate.models.layers import ACTIVATIONS, activation
from tests.test_plugins import ASSET

# A plugin model is registered, and so tested, as the built-in ones are.
plugins.load([str(ASSET)])


@pytest.mark.parametrize("name", list_models())
def test_forward_and_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=10)
    x = torch.randn(4, 3, 32, 32)
    out = model(x)
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("name", list_models())
def test_none_means_the_models_default(name):
    defaults = default_args(name)
    assert resolve_args(name, {k: None for k in defaults}) == defaults


@pytest.mark.parametrize("name", list_models())
def test_unknown_argument_is_refused_by_name(name):
    with pytest.raises(ConfigError, match="model.no_such_arg"):
        resolve_args(name, {"no_such_arg": 1})


@pytest.mark.parametrize("depth", range(1, 9))
def test_plain_cnn_depth_counts_conv_layers(depth):
    model = create_model("plain_cnn", depth=depth)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in model.modules()) == depth


# Each activation's definition, written out in plain math (the slopes are the registry's:
# leaky 0.1, PReLU's learnable slope starting at 0.25, ELU and CELU with alpha 1).
DEFINITIONS = {
    "relu": lambda v: max(v, 0.0),
    "leaky_relu": lambda v: v if v > 0 else 0.1 * v,
    "prelu": lambda v: v if v > 0 else 0.25 * v,
    "elu": lambda v: v if v > 0 else math.exp(v) - 1,
    "celu": lambda v: v if v > 0 else math.exp(v) - 1,
    "gelu": lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))),
    "silu": lambda v: v / (1 + math.exp(-v)),
    "mish": lambda v: v * math.tanh(math.log1p(math.exp(v))),
}
KNOWN_INPUTS = [-4.0, -2.5, -1.0, -0.5, -0.1, 0.0, 0.1, 0.5, 1.0, 2.5, 4.0, 7.0]


def test_every_activation_has_a_definition_here():
    assert set(DEFINITIONS) == set(ACTIVATIONS)


def assert_computes(module: torch.nn.Module, name: str, channels: int) -> None:
    x = torch.tensor(KNOWN_INPUTS, dtype=torch.float64).repeat(channels, 1).view(1, channels, 3, 4)
    # PReLU learns one slope per channel; the others have nothing to learn.
    assert sum(p.numel() for p in module.parameters()) == (channels if name == "prelu" else 0)
    out = module.double()(x.clone())  # a clone: several of them work in place
    want = torch.tensor([DEFINITIONS[name](v) for v in KNOWN_INPUTS], dtype=torch.float64)
    torch.testing.assert_close(out, want.repeat(channels, 1).view_as(x), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_each_activation_computes_its_definition(name):
    assert_computes(activation(name, 5), name, 5)


def test_an_unknown_activation_is_refused_naming_those_accepted():
    with pytest.raises(ConfigError) as e:
        activation("swish2", 4)
    assert (
        str(e.value)
        == "model.activation must be one of relu, leaky_relu, prelu, elu, celu, gelu, silu, mish, got 'swish2'"
    )


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_plain_cnn_uses_the_activation_it_is_given(name):
    model = create_model("plain_cnn", depth=2, activation=name, width=6)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    for layer, channels in [(model[0], 6), (model[1], 12)]:
        conv, bn, act = layer[0], layer[1], layer[2]
        assert (type(conv), type(bn)) == (torch.nn.Conv2d, torch.nn.BatchNorm2d)
        assert_computes(act, name, channels)


def test_plain_cnn_per_layer_kernels_and_channels():
    model = create_model("plain_cnn", depth=2, kernel_size=[7, 3], channels=[8, 16])
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.kernel_size for c in convs] == [(7, 7), (3, 3)]
    assert [c.out_channels for c in convs] == [8, 16]


def test_plain_cnn_classifier_sees_512_features_by_default():
    model = create_model("plain_cnn")
    assert model[-1].in_features == 512


def test_plain_cnn_batchnorm_and_dropout_switches():
    with_bn = create_model("plain_cnn", depth=3, batchnorm=True, dropout=0.5)
    without = create_model("plain_cnn", depth=3, batchnorm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())
    assert [m.p for m in with_bn.modules() if isinstance(m, torch.nn.Dropout)] == [0.5]


def test_pool_first_moves_max_pooling_before_bn_and_relu():
    layer = create_model("plain_cnn", depth=1, pool_first=True)[0]
    kinds = [type(m).__name__ for m in layer]
    assert kinds == ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]
    layer = create_model("plain_cnn", depth=1, pool_first=False)[0]
    assert [type(m).__name__ for m in layer] == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"kernel_size": [3, 3, 3], "depth": 2}, "model.kernel_size has 3 values for 2 layers"),
        ({"kernel_size": 4}, "odd"),
        ({"activation": "swish2"}, "model.activation must be one of"),
        ({"dropout": 1.0}, "model.dropout"),
    ],
)
def test_plain_cnn_bad_arguments(args, fragment):
    with pytest.raises(ConfigError, match=None) as e:
        create_model("plain_cnn", **args)
    assert fragment in str(e.value)


def test_parameter_count_is_reported():
    assert count_params(create_model("plain_cnn", depth=1, width=8)) == (3 * 9 * 8) + 2 * 8 + (4 * 8 * 10 + 10)
