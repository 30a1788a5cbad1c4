"""Measurements of training itself, taken by the trainer when a config asks for them.

Scalars are keyed by name for the long-format metrics table:
``relgrad.conv<i>`` (relative gradient norm of the i-th conv layer, 1-based, in module order)
and ``landscape.x<m>`` (the batch loss after a plain gradient step of m times the current
learning rate; ``landscape.x0`` is the loss where the weights are).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch
from torch import nn


def conv_layers(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.modules() if isinstance(m, nn.Conv2d)]


@torch.no_grad()
def relative_grad_norms(model: nn.Module) -> dict[str, float]:
    """||grad W||_F / ||W||_F per conv layer: how hard each layer is being pushed.

    One stacked transfer rather than a sync per layer.
    """
    convs = [c for c in conv_layers(model) if c.weight.grad is not None]
    if not convs:
        return {}
    ratios = torch.stack([c.weight.grad.float().norm() / c.weight.float().norm().clamp_min(1e-12) for c in convs])
    return {f"relgrad.conv{i}": float(v) for i, v in enumerate(ratios.tolist(), 1)}


def _step_name(multiple: float) -> str:
    return f"landscape.x{multiple:g}"


@torch.no_grad()
def loss_along_gradient(
    model: nn.Module,
    loss_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    lr: float,
    multiples: tuple[float, ...],
    autocast=contextlib.nullcontext,
) -> dict[str, float]:
    """The loss on this batch at w - m * lr * grad for each multiple m, after Santurkar et al.

    Call after ``backward()`` and before the optimizer step. Weights and batch-norm running
    statistics are restored exactly afterwards, so training goes on as if nothing happened.
    """
    params = [p for p in model.parameters() if p.grad is not None]
    grads = [p.grad for p in params]
    weights = [p.detach().clone() for p in params]
    buffers = [b.detach().clone() for b in model.buffers()]
    names, losses = [], []
    for m in sorted({0.0, *multiples}):
        for p, w in zip(params, weights):
            p.copy_(w)
        torch._foreach_add_(params, grads, alpha=-m * lr)
        with autocast():
            losses.append(loss_fn(model(x), y).float())
        names.append(_step_name(m))
    for p, w in zip(params, weights):
        p.copy_(w)
    for b, saved in zip(model.buffers(), buffers):
        b.copy_(saved)
    return dict(zip(names, torch.stack(losses).tolist()))


def first_kernels(model: nn.Module) -> np.ndarray:
    """The first conv layer's weights, [out, in, k, k], as float32 on the CPU."""
    return conv_layers(model)[0].weight.detach().float().cpu().numpy()
