"""Optimizers and learning-rate schedules, built from their config pieces.

Ranger (RAdam + Lookahead) and Ranger21 come from pytorch-optimizer, not from here.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ablate.config import OptimCfg, ScheduleCfg


def param_groups(model: nn.Module, cfg: OptimCfg) -> list[dict]:
    """One group, or with ``decay_weights_only`` two: biases and norm scales (1-D tensors)
    take no weight decay, which would only pull them towards zero for nothing."""
    if not cfg.decay_weights_only:
        return [{"params": [p for p in model.parameters() if p.requires_grad]}]
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1]},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def build_optimizer(cfg: OptimCfg, model: nn.Module, total_steps: int) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adadelta":
        return torch.optim.Adadelta(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    import pytorch_optimizer  # only the runs that ask for it pay its import

    if cfg.name == "ranger":
        return pytorch_optimizer.Ranger(groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "ranger21":
        return pytorch_optimizer.Ranger21(
            groups, num_iterations=total_steps, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # config validation keeps this unreachable


def lr_factor(cfg: ScheduleCfg, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate at ``step`` (0-based, of ``total``) as a fraction of the configured one."""
    t = step / max(total, 1)
    if cfg.name == "onecycle":
        # Linear up to the peak, linear down to final_frac: the DAWNBench ResNet-9 shape.
        if t < cfg.peak_at:
            return t / cfg.peak_at
        return 1 - (1 - cfg.final_frac) * (t - cfg.peak_at) / (1 - cfg.peak_at)
    if cfg.name == "onecycle3":
        # The report's three phases (section 5.3): start_frac up to the peak, as long back
        # down to start_frac, then down to final_frac by the end.
        p, lo = cfg.peak_at, cfg.start_frac
        if t < p:
            return lo + (1 - lo) * t / p
        if t < 2 * p:
            return 1 - (1 - lo) * (t - p) / p
        return lo - (lo - cfg.final_frac) * (t - 2 * p) / (1 - 2 * p)
    warmup = cfg.warmup_epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.name == "constant":
        return 1.0
    if cfg.name == "step":
        return cfg.gamma ** ((step // steps_per_epoch) // cfg.step_every)
    if cfg.name == "cosine":
        t = (step - warmup) / max(total - warmup, 1)
        return cfg.final_frac + (1 - cfg.final_frac) * 0.5 * (1 + math.cos(math.pi * t))
    raise ValueError(f"unknown schedule {cfg.name!r}")


def build_schedule(cfg: ScheduleCfg, optimizer, epochs: int, steps_per_epoch: int):
    """A per-step schedule: call ``step()`` after every optimizer step.

    Ranger21 runs its own warmup and warm-down, so it gets a constant factor rather than
    a second schedule multiplied onto its own.
    """
    total = epochs * steps_per_epoch
    own_schedule = type(optimizer).__name__ == "Ranger21"
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 1.0 if own_schedule else lr_factor(cfg, step, total, steps_per_epoch)
    )
