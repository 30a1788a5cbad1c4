"""``speednet``: the net of the CIFAR-10 speedruns, in the shape of airbench94 (Jordan 2024,
"94% on CIFAR-10 in 3.29 seconds on a single GPU", arXiv 2404.00498), which descends from
David Page's DAWNBench ResNet ("How to train your ResNet").

A frozen 2x2 patch-whitening conv (its bias trains) -> GELU -> three blocks of
conv3x3 -> max-pool 2 -> BN -> GELU -> conv3x3 -> BN -> GELU -> global max-pool ->
a bias-free linear layer -> a fixed logit scale. 1,972,792 parameters at the defaults
(1,971,352 of them trained: not the whitening filters, nor the BN scales).

Two arguments give airbench94_muon's details (None, the default, builds the net as before):
``head_std`` rescales the head's default init to that standard deviation (the record's 1),
and ``whiten_bias_steps`` trains the whitening bias for that many optimizer steps only
(the record's 3 epochs), through ``frozen_after``, a protocol any model may offer: the
optimizer gives such a parameter a group whose schedule is squeezed into those steps, and
the trainer freezes it after them (``ablate.freezing``).

The whitening filters come from the training images: the trainer calls ``init_from_data``
once at the start of a fresh run; a resumed run gets them back from its checkpoint.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ablate.config import ConfigError
from ablate.models.registry import register_model
from ablate.models.resnet import Scale


class PatchWhitening(nn.Conv2d):
    """A k x k conv (no padding) whose filters decorrelate the input's k x k patches.

    Its 2 * 3k^2 filters are the eigenvectors of the patch covariance scaled by
    1 / sqrt(eigenvalue + eps), and their negatives: a whitened patch feeds the GELU after
    it both ways round, so the GELU cuts away no direction of it. The weights never train,
    the bias does.
    """

    def __init__(self, in_channels: int = 3, kernel_size: int = 2, eps: float = 5e-4):
        dims = in_channels * kernel_size**2
        super().__init__(in_channels, 2 * dims, kernel_size, padding=0, bias=True)
        self.eps = eps
        self.weight.requires_grad_(False)
        nn.init.zeros_(self.bias)

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor) -> None:
        """Set the filters from normalised images [N, C, H, W], as the net will see them."""
        k = self.kernel_size[0]
        patches = images.unfold(2, k, 1).unfold(3, k, 1)  # [N, C, H', W', k, k]
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, self.in_channels * k * k)
        # float64: the small eigenvalues are the ones whitening amplifies most.
        patches = patches.double()
        centred = patches - patches.mean(0)
        cov = centred.T @ centred / len(centred)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = eigenvectors.T / (eigenvalues.clamp_min(0) + self.eps).sqrt()[:, None]
        filters = filters.flip(0).reshape(-1, self.in_channels, k, k)  # largest variance first
        self.weight.copy_(torch.cat([filters, -filters]).to(self.weight))


class ShiftNorm(nn.BatchNorm2d):
    """BatchNorm with its scale fixed at 1 and a learned shift (bias).

    ``bias_lr_scale`` s: the shift is stored as b / sqrt(s) and multiplied back in the
    forward pass, so under SGD it learns s times faster with the same pull of weight decay
    per step (airbench's "bias_scaler", 64), without an optimizer group of its own.
    ``momentum`` is PyTorch's: the weight of the newest batch in the running statistics.
    """

    def __init__(self, channels: int, momentum: float, bias_lr_scale: float = 1.0, eps: float = 1e-12):
        super().__init__(channels, eps=eps, momentum=momentum)
        self.weight.requires_grad_(False)
        self.bias_factor = bias_lr_scale**0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.bias_factor if self.bias_factor != 1 else self.bias
        return F.batch_norm(
            x, self.running_mean, self.running_var, self.weight, bias, self.training, self.momentum, self.eps
        )


def dirac_conv(c_in: int, c_out: int, dirac: bool) -> nn.Conv2d:
    """A 3x3 conv, no bias; with ``dirac`` its first filters start as the identity on the
    input channels (on top of the usual random init of the rest), so a fresh net passes
    its input through every block."""
    conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)
    if dirac:
        with torch.no_grad():
            nn.init.dirac_(conv.weight[: min(c_in, c_out)])
    return conv


class SpeedBlock(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, momentum: float, bias_lr_scale: float, dirac: bool):
        super().__init__(
            dirac_conv(c_in, c_out, dirac),
            nn.MaxPool2d(2),
            ShiftNorm(c_out, momentum, bias_lr_scale),
            nn.GELU(),
            dirac_conv(c_out, c_out, dirac),
            ShiftNorm(c_out, momentum, bias_lr_scale),
            nn.GELU(),
        )


class SpeedNet(nn.Sequential):
    def __init__(
        self,
        num_classes: int,
        widths: list[int],
        bn_momentum: float,
        bias_lr_scale: float,
        logit_scale: float,
        dirac: bool,
        whiten_eps: float,
        head_std: float | None = None,
        whiten_bias_steps: int | None = None,
    ):
        whiten = PatchWhitening(3, 2, whiten_eps)
        layers: list[nn.Module] = [whiten, nn.GELU()]
        c = whiten.out_channels
        for w in widths:
            layers.append(SpeedBlock(c, w, bn_momentum, bias_lr_scale, dirac))
            c = w
        head = nn.Linear(c, num_classes, bias=False)
        if head_std is not None:
            with torch.no_grad():
                head.weight.mul_(head_std / head.weight.std())
        layers += [nn.AdaptiveMaxPool2d(1), nn.Flatten(), head, Scale(logit_scale)]
        super().__init__(*layers)
        self.whiten_bias_steps = whiten_bias_steps

    def init_from_data(self, images: torch.Tensor) -> None:
        self[0].init_from_data(images)

    def frozen_after(self) -> dict[str, int]:
        """Parameters that train for a number of optimizer steps only: name -> steps.

        A frozen whitening bias leaves nothing before the first block needing a gradient,
        so the backward pass stops there."""
        return {} if self.whiten_bias_steps is None else {"0.bias": self.whiten_bias_steps}


@register_model
def speednet(
    num_classes: int = 10,
    widths: list[int] = [64, 256, 256],  # noqa: B006  (read, never mutated)
    bn_momentum: float = 0.4,
    bias_lr_scale: float = 64.0,
    logit_scale: float = 1 / 9,
    dirac: bool = True,
    whiten_eps: float = 5e-4,
    head_std: float | None = None,
    whiten_bias_steps: int | None = None,
) -> nn.Module:
    """airbench94's net: whitening, three conv-pool-BN-GELU blocks of ``widths``, max-pool,
    linear, x ``logit_scale``.

    ``bn_momentum`` 0.4 is airbench's 0.6 in the other convention; ``bias_lr_scale`` speeds
    up the BN shifts under SGD (see ``ShiftNorm``); ``dirac`` starts each conv's first
    filters as the identity; ``head_std`` (None: PyTorch's init) rescales the head's init
    to that standard deviation; ``whiten_bias_steps`` (None: the whole run) is how many
    optimizer steps the whitening bias trains before it is frozen.
    """
    if not widths or any(w < 1 for w in widths):
        raise ConfigError(f"model.widths must be one or more positive widths, got {widths}")
    if not 0 < bn_momentum <= 1:
        raise ConfigError(f"model.bn_momentum must be in (0, 1], got {bn_momentum}")
    if bias_lr_scale <= 0 or logit_scale <= 0 or whiten_eps <= 0:
        raise ConfigError("model.bias_lr_scale, model.logit_scale and model.whiten_eps must be > 0")
    if head_std is not None and not head_std > 0:
        raise ConfigError(f"model.head_std must be > 0 (or none for PyTorch's init), got {head_std}")
    if whiten_bias_steps is not None and whiten_bias_steps < 1:
        raise ConfigError(f"model.whiten_bias_steps must be >= 1 (or none for the whole run), got {whiten_bias_steps}")
    return SpeedNet(
        num_classes,
        list(widths),
        bn_momentum,
        bias_lr_scale,
        logit_scale,
        dirac,
        whiten_eps,
        head_std,
        whiten_bias_steps,
    )
