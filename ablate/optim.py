"""Optimizers and learning-rate schedules, built from their config pieces."""

from __future__ import annotations

import math

import torch
from torch import nn

from ablate.config import OptimCfg, ScheduleCfg


def build_optimizer(cfg: OptimCfg, model: nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")  # config validation keeps this unreachable


def lr_factor(cfg: ScheduleCfg, step: int, total: int, steps_per_epoch: int) -> float:
    """The learning rate at ``step`` (0-based, of ``total``) as a fraction of the configured one."""
    t = step / max(total, 1)
    if cfg.name == "onecycle":
        # Linear up to the peak, linear down to final_frac: the DAWNBench ResNet-9 shape.
        if t < cfg.peak_at:
            return t / cfg.peak_at
        return 1 - (1 - cfg.final_frac) * (t - cfg.peak_at) / (1 - cfg.peak_at)
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
    """A per-step schedule: call ``step()`` after every optimizer step."""
    total = epochs * steps_per_epoch
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(cfg, step, total, steps_per_epoch)
    )
