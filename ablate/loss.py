"""The training loss, built from its config piece and the data's number of classes, by
name from a registry open to plugins: cross_entropy (the report's, with PyTorch's or its
own label smoothing) and focal (Lin et al., 2017)."""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ablate.config import ConfigError, LossCfg, check_smoothing

LOSSES: dict[str, Callable[[LossCfg, int], nn.Module]] = {}


def register_loss(name: str):
    """Register ``build(cfg: LossCfg, num_classes) -> nn.Module`` as ``loss.name = NAME``. The
    module maps (logits [B, C], labels [B]) to the batch's mean loss; a fused group runs it
    under torch.func.vmap, so it must not branch on the values it is given."""

    def add(build):
        LOSSES[name] = build
        return build

    return add


def check_name(name: str) -> None:
    if name not in LOSSES:
        raise ConfigError(
            f"loss.name must be one of {', '.join(LOSSES)}, got {name!r} "
            "(a plugin registers more with ablate.loss.register_loss)"
        )


def torch_smoothing(cfg: LossCfg, num_classes: int) -> float:
    """The ``label_smoothing`` of torch's CrossEntropyLoss that gives ``cfg``'s targets.

    torch spreads s uniformly over all C classes (true class 1 - s + s/C, others s/C); the
    report's Eq. 1 spreads eps over the C - 1 wrong ones. s = eps * C / (C - 1) makes the two
    the same targets, so both forms run torch's fused kernel.
    """
    if cfg.smoothing_form == "pytorch":
        return cfg.label_smoothing
    if num_classes < 2:
        raise ConfigError(f'loss.smoothing_form = "report" needs at least 2 classes, the data have {num_classes}')
    check_smoothing(cfg, num_classes)  # the data may have other than the config-time count
    return min(1.0, cfg.label_smoothing * num_classes / (num_classes - 1))


def build_loss(cfg: LossCfg, num_classes: int) -> nn.Module:
    check_name(cfg.name)
    return LOSSES[cfg.name](cfg, num_classes)


@register_loss("cross_entropy")
def _cross_entropy(cfg: LossCfg, num_classes: int) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=torch_smoothing(cfg, num_classes))


class FocalLoss(nn.Module):
    """Each image's cross-entropy (label smoothing included) times (1 - p_true) ** gamma:
    images the model already gets right with confidence count less. gamma 0 is cross-entropy."""

    def __init__(self, gamma: float, smoothing: float = 0.0):
        super().__init__()
        self.gamma, self.smoothing = gamma, smoothing

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, -1)
        p_true = logp.gather(-1, labels.unsqueeze(-1)).squeeze(-1).exp()
        ce = nn.functional.cross_entropy(logits, labels, reduction="none", label_smoothing=self.smoothing)
        return ((1 - p_true).pow(self.gamma) * ce).mean()


@register_loss("focal")
def _focal(cfg: LossCfg, num_classes: int) -> nn.Module:
    return FocalLoss(cfg.focal_gamma, torch_smoothing(cfg, num_classes))
