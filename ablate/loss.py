"""The training loss, built from its config piece and the data's number of classes."""

from __future__ import annotations

from torch import nn

from ablate.config import ConfigError, LossCfg, check_smoothing


def torch_smoothing(cfg: LossCfg, num_classes: int) -> float:
    """The ``label_smoothing`` of torch's CrossEntropyLoss that gives ``cfg``'s targets.

    torch spreads s uniformly over all C classes (true class 1 - s + s/C, others s/C); the
    report's Eq. 1 spreads eps over the C - 1 wrong ones. s = eps * C / (C - 1) makes the two
    the same targets, so both forms run torch's fused kernel.
    """
    if cfg.smoothing_form == "pytorch":
        return cfg.label_smoothing
    if num_classes < 2:
        raise ConfigError(f"loss.smoothing_form = \"report\" needs at least 2 classes, the data have {num_classes}")
    check_smoothing(cfg, num_classes)  # the data may have other than the config-time count
    return min(1.0, cfg.label_smoothing * num_classes / (num_classes - 1))


def build_loss(cfg: LossCfg, num_classes: int) -> nn.Module:
    return nn.CrossEntropyLoss(label_smoothing=torch_smoothing(cfg, num_classes))
