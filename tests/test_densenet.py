"""The light DenseNet: the report's 59 convs, its size, and a memory-efficient path that
computes exactly what the plain one does."""

import copy

import pytest
import torch
from torch import nn

import ablate.models.densenet as densenet
from ablate.config import ConfigError
from ablate.models import count_params, create_model


def test_59_conv_layers():
    model = create_model("densenet")
    assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == 59


def test_parameter_count():
    # The report says 614,850; this layout's closest is 613,226 (0.26% below).
    assert count_params(create_model("densenet")) == 613_226


def test_output_shape_in_eval():
    model = create_model("densenet").eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def twins():
    """A small DenseNet in float64, memory-efficient, and its plain copy."""
    torch.manual_seed(0)
    efficient = create_model("densenet", blocks=[3, 2], growth=4, bottleneck=8).double()
    plain = copy.deepcopy(efficient)
    for m in plain.modules():
        if isinstance(m, densenet.DenseLayer):
            m.memory_efficient = False
    return efficient, plain


def test_memory_efficient_path_gives_the_same_output_gradients_and_statistics(monkeypatch):
    efficient, plain = twins()
    used, checkpoint = [], densenet.checkpoint
    monkeypatch.setattr(densenet, "checkpoint", lambda *a, **k: used.append(1) or checkpoint(*a, **k))
    x = torch.randn(3, 3, 16, 16, dtype=torch.float64)
    outs = []
    for model in (efficient, plain):
        out = model(x)
        out.square().sum().backward()
        outs.append(out)
    assert len(used) == 5  # one checkpoint per dense layer, in the efficient model only
    torch.testing.assert_close(outs[0], outs[1])
    for (name, p), q in zip(efficient.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p.grad, q.grad, msg=name)
    # The recomputation in backward does not count the batch in the running statistics again.
    for (name, a), b in zip(efficient.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, msg=name)
    assert {int(b) for n, b in efficient.named_buffers() if n.endswith("num_batches_tracked")} == {1}


def test_no_checkpoint_in_eval_or_without_grad(monkeypatch):
    efficient, _ = twins()
    monkeypatch.setattr(densenet, "checkpoint", lambda *a, **k: pytest.fail("checkpointed"))
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        efficient(x)
    efficient.eval()(x)


@pytest.mark.parametrize(
    "args, fragment",
    [
        ({"blocks": []}, "model.blocks"),
        ({"growth": 0}, "model.growth"),
        ({"compression": 0.0}, "model.compression"),
    ],
)
def test_bad_arguments(args, fragment):
    with pytest.raises(ConfigError, match=fragment):
        create_model("densenet", **args)
