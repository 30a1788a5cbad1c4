"""Residual blocks are wired as the report writes them; the nets have the report's sizes."""

import pytest
import torch
from torch import nn

from ablate.config import ConfigError
from ablate.models import count_params, create_model
from ablate.models.resnet import ORDERS, ResBlock

# The report's five blocks (section 4.8), written out here again rather than read from the code.
REPORT = {
    "original": "Conv BN ReLU Conv BN addition ReLU",
    "bn_after_add": "Conv BN ReLU Conv addition BN ReLU",
    "act_before_add": "Conv BN ReLU Conv BN ReLU addition",
    "act_preact": "ReLU Conv BN ReLU Conv BN addition",
    "preact": "BN ReLU Conv BN ReLU Conv addition",
}
KIND = {nn.Conv2d: "Conv", nn.BatchNorm2d: "BN", nn.ReLU: "ReLU", nn.MaxPool2d: "pool"}

# Where the last ReLU sits decides the signs: (output can be < 0, output - input can be < 0).
SIGNS = {
    "original": (False, True),  # ReLU after the addition
    "bn_after_add": (False, True),
    "act_before_add": (True, False),  # the residual is a ReLU output, added to any input
    "act_preact": (True, True),  # the residual ends in BN, nothing follows the addition
    "preact": (True, True),  # the residual ends in a conv
}


def calls(block, x):
    """The block's leaf modules as forward calls them: (name, module) pairs."""
    seen = []
    hooks = [
        m.register_forward_hook(lambda m, i, o, name=name: seen.append((name, m)))
        for name, m in block.named_modules()
        if not list(m.children())
    ]
    try:
        out = block(x)
    finally:
        for h in hooks:
            h.remove()
    return out, seen


def test_the_table_is_the_reports_wiring():
    names = {"Conv": "conv", "BN": "bn", "ReLU": "act", "addition": "add"}
    assert {k: [names[w] for w in v.split()] for k, v in REPORT.items()} == {k: v.split() for k, v in ORDERS.items()}


@pytest.mark.parametrize("order", list(REPORT))
def test_forward_runs_the_modules_in_the_reports_order(order):
    torch.manual_seed(0)
    block = ResBlock(8, 8, order)
    x = torch.randn(4, 8, 8, 8)
    x_before = x.clone()
    out, seen = calls(block, x)
    assert torch.equal(x, x_before)  # in-place activations left the shortcut's input alone
    main = [m for name, m in seen if not name.startswith("shortcut")]
    assert [KIND[type(m)] for m in main] == [w for w in REPORT[order].split() if w != "addition"]
    assert block.order_ops == ORDERS[order].split()
    # Replaying those modules with the addition where the report puts it gives the output:
    # the addition happens at that point and nowhere else.
    replay, modules = x.clone(), iter(main)
    for op in REPORT[order].split():
        replay = replay + x if op == "addition" else next(modules)(replay)
    torch.testing.assert_close(out, replay)


@pytest.mark.parametrize("order", list(REPORT))
def test_the_activations_place_shows_in_the_signs(order):
    torch.manual_seed(0)
    block = ResBlock(8, 8, order)
    x = torch.randn(4, 8, 8, 8)
    with torch.no_grad():
        out = block(x)
    can_be_negative, residual_can_be_negative = SIGNS[order]
    assert bool((out < 0).any()) == can_be_negative
    assert bool((out - x < -1e-6).any()) == residual_can_be_negative


@pytest.mark.parametrize("order", list(REPORT))
def test_stride_downsampling(order):
    block = ResBlock(8, 16, order, downsample="stride")
    convs = [m for m in block.layers if isinstance(m, nn.Conv2d)]
    assert [c.stride for c in convs] == [(2, 2), (1, 1)]
    assert not any(isinstance(m, nn.MaxPool2d) for m in block.modules())
    assert block.shortcut[0].stride == (2, 2) and block.shortcut[0].kernel_size == (1, 1)
    assert block(torch.randn(2, 8, 8, 8)).shape == (2, 16, 4, 4)


@pytest.mark.parametrize("order", list(REPORT))
def test_maxpool_downsampling_pools_both_paths_before_the_convs(order):
    block = ResBlock(8, 16, order, downsample="maxpool")
    out, seen = calls(block, torch.randn(2, 8, 8, 8))
    assert out.shape == (2, 16, 4, 4)
    assert block.order_ops == ["pool", *ORDERS[order].split()]
    assert isinstance(seen[0][1], nn.MaxPool2d)  # the pool comes first, before the shortcut too
    assert all(m.stride == (1, 1) for _, m in seen if isinstance(m, nn.Conv2d))
    # With the channels unchanged the shortcut is the pooled input itself.
    same = ResBlock(8, 8, order, downsample="maxpool")
    assert isinstance(same.shortcut, nn.Identity) and same(torch.randn(2, 8, 8, 8)).shape == (2, 8, 4, 4)


@pytest.mark.parametrize("downsample, pools", [("stride", 0), ("maxpool", 2)])
def test_resnet_downsampling_shapes(downsample, pools):
    model = create_model("resnet", downsample=downsample)
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
    shapes = []
    model[-4].register_forward_hook(lambda m, i, o: shapes.append(o.shape))  # the last block
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert shapes == [(2, 128, 8, 8)]


def test_resnet_is_small_at_the_defaults():
    assert count_params(create_model("resnet")) == 308_650


@pytest.mark.parametrize(
    "order, stem, tail",
    [
        ("original", ["Conv", "BN", "ReLU"], []),
        ("act_preact", ["Conv", "BN"], ["ReLU"]),  # each block opens with a ReLU; so does the tail
        ("preact", ["Conv"], ["BN", "ReLU"]),  # each block opens with BN -> ReLU (He et al. 2016)
    ],
)
def test_resnet_stem_and_tail_follow_the_block(order, stem, tail):
    model = list(create_model("resnet", block=order))
    blocks = [i for i, m in enumerate(model) if isinstance(m, ResBlock)]
    assert [KIND[type(m)] for m in model[: blocks[0]]] == stem
    assert [KIND[type(m)] for m in model[blocks[-1] + 1 : -3]] == tail


def test_resnet9_has_the_reports_parameter_count():
    assert count_params(create_model("resnet9")) == 6_573_130


def test_resnet12_has_the_reports_parameter_count():
    model = create_model("resnet12")
    assert count_params(model) == 7_827_786
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 12


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_resnet18_has_the_reports_parameter_count(downsample):
    assert count_params(create_model("resnet18", downsample=downsample)) == 11_173_962


def test_resnet18_the_reports_best_variant_runs():
    model = create_model("resnet18", block="preact", activation="mish", downsample="maxpool").eval()
    assert count_params(model) == 11_173_962
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(
    "pool_first, kinds",
    [
        (True, ["Conv2d", "MaxPool2d", "BatchNorm2d", "ReLU"]),
        (False, ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"]),
    ],
)
def test_resnet9_pool_first_moves_the_pool_before_bn(pool_first, kinds):
    model = create_model("resnet9", pool_first=pool_first)
    pooled = [layer for layer in model if any(isinstance(m, nn.MaxPool2d) for m in layer.children())]
    assert len(pooled) == 3 and all([type(m).__name__ for m in layer] == kinds for layer in pooled)


@pytest.mark.parametrize("name", ["resnet", "resnet18"])
def test_unknown_block_is_refused_with_the_accepted_names(name):
    with pytest.raises(ConfigError) as e:
        create_model(name, block="bottleneck")
    assert "model.block" in str(e.value) and all(order in str(e.value) for order in ORDERS)


def test_unknown_downsampling_is_refused():
    with pytest.raises(ConfigError, match="model.downsample must be one of stride, maxpool"):
        create_model("resnet", downsample="avgpool")


def _map_sizes(model: nn.Module) -> list[int]:
    sizes = []
    for layer in model:
        layer.register_forward_hook(lambda m, i, out: sizes.append(out.shape[-1]))
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    return sizes[:8]  # the four stages and their residual pairs, before the global pool


@pytest.mark.parametrize("downsample, pools, strided", [("maxpool", 3, 0), ("stride", 0, 3)])
def test_resnet12_downsamples_by_max_pool_or_by_stride(downsample, pools, strided):
    model = create_model("resnet12", downsample=downsample)
    assert count_params(model) == 7_827_786
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == pools
    assert sum(isinstance(m, nn.Conv2d) and m.stride == (2, 2) for m in model.modules()) == strided
    assert _map_sizes(model) == [32, 32, 16, 16, 8, 8, 4, 4]


def test_resnet12_keeps_max_pool_by_default_and_resnet9_has_no_downsample():
    default = create_model("resnet12")
    pooled = create_model("resnet12", downsample="maxpool")
    assert [type(m) for m in default.modules()] == [type(m) for m in pooled.modules()]
    with pytest.raises(ConfigError, match="unknown config key 'model.downsample' for resnet9"):
        create_model("resnet9", downsample="stride")
    with pytest.raises(ConfigError, match="model.downsample must be one of stride, maxpool"):
        create_model("resnet12", downsample="avgpool")
