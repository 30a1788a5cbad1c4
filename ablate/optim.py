"""Optimizers and learning-rate schedules, built from their config pieces.

SGD, Adam, AdamW and AdaDelta are torch's; Ranger (RAdam + Lookahead) and Ranger21 come from
pytorch-optimizer. Muon (``optimizer.name = "muon"``, keys under ``optimizer.muon``) is ours:
torch.optim.Muon takes only 2-D parameters, so it refuses a conv filter bank, and neither
renormalises the weights nor offers Muon and SGD groups in one optimizer. Ours orthogonalises
the Nesterov momentum of each conv filter bank, flattened to [filters, fan-in], with a few
quintic Newton-Schulz iterations in bf16 (Jordan et al. 2024, the airbench94_muon record), and
gives every other parameter SGD; one optimizer holds both kinds of group, so the schedule
(a factor on every group's lr), checkpoints and fused members see nothing new.
"""

from __future__ import annotations

import inspect
import math

import torch
from torch import nn
from torch.optim.sgd import sgd  # torch's functional SGD step

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


# The quintic's coefficients from the record: they maximise the slope at zero, so 3 steps
# take small singular values most of the way up, at the price of leaving all of them in about
# [0.5, 1.5] rather than at 1; that does not hurt training.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def orthogonalize(m: torch.Tensor, steps: int, eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """About U V^T of m = U S V^T (2-D) by ``steps`` Newton-Schulz iterations, in ``dtype``
    (the record's bf16; float32 to compare with it step by step in fp32)."""
    a, b, c = NS_COEFFICIENTS
    x = m.to(dtype)
    x = x / (x.norm() + eps)  # every singular value at most 1, where the iteration converges
    tall = x.shape[0] > x.shape[1]
    if tall:
        x = x.T  # the Gram matrix of the shorter side is the cheaper one
    for _ in range(steps):
        gram = x @ x.T
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.T if tall else x


class Muon(torch.optim.Optimizer):
    """Muon on the groups with ``orthogonalize`` true, SGD on the others (torch.optim.SGD's
    step: momentum, Nesterov, weight decay added to the gradient); each group its own lr and
    weight decay.

    A Muon group's step, per weight W with gradient G: the buffer B = momentum B + G; the
    update U = G + momentum B (Nesterov) or B; W is scaled by 1 - lr weight_decay
    (decoupled) and, with ``renormalize``, to a Frobenius norm of sqrt(rows); then
    W -= lr orthogonalize(U as [rows, -1]).
    """

    def __init__(
        self, groups: list[dict], lr: float, momentum: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0
    ):
        defaults = dict(
            lr=lr,
            momentum=momentum,
            nesterov=nesterov,
            weight_decay=weight_decay,
            orthogonalize=False,
            ns_steps=3,
            ns_dtype="bfloat16",
            renormalize=False,
        )
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if not group["orthogonalize"]:
                self._sgd(group)
                continue
            lr, momentum, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                update = self._momentum(self.state[p], p.grad, momentum, group["nesterov"])
                if wd:
                    p.mul_(1 - lr * wd)
                if group["renormalize"]:  # the clamp only spares an all-zero bank a NaN
                    p.mul_(math.sqrt(p.shape[0]) / p.norm().clamp_min(1e-30))
                flat = update.reshape(len(update), -1)
                dtype = getattr(torch, group["ns_dtype"])
                p.add_(orthogonalize(flat, group["ns_steps"], dtype=dtype).view_as(p), alpha=-lr)
        return loss

    def _sgd(self, group: dict) -> None:
        """torch.optim.SGD's step on a group, through torch's own functional ``sgd``: it takes
        the whole group at once (foreach on CUDA) and starts a buffer as torch's SGD does."""
        params = [p for p in group["params"] if p.grad is not None]
        bufs = [self.state[p].get("momentum_buffer") for p in params]
        sgd(
            params,
            [p.grad for p in params],
            bufs,  # a None is filled in with the step's new buffer
            weight_decay=group["weight_decay"],
            momentum=group["momentum"],
            lr=group["lr"],
            dampening=0.0,
            nesterov=group["nesterov"],
            maximize=False,
        )
        if group["momentum"]:
            for p, buf in zip(params, bufs):
                self.state[p]["momentum_buffer"] = buf

    @staticmethod
    def _momentum(state: dict, grad: torch.Tensor, momentum: float, nesterov: bool) -> torch.Tensor:
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(grad)
        buf = state["momentum_buffer"].mul_(momentum).add_(grad)
        return grad.add(buf, alpha=momentum) if nesterov else buf


def muon_groups(model: nn.Module, cfg: OptimCfg) -> list[dict]:
    """Conv filter banks (4-D) first, then the other weights (the linear head), then the 1-D
    parameters (biases, norm scales); a group the model has no parameter for is left out."""
    muon = cfg.muon
    params = [p for p in model.parameters() if p.requires_grad]
    bias_wd = muon.bias_weight_decay
    if bias_wd is None:
        bias_wd = 0.0 if cfg.decay_weights_only else cfg.weight_decay
    groups = [
        {
            "params": [p for p in params if p.ndim == 4],
            "orthogonalize": True,
            "lr": muon.lr,
            "momentum": muon.momentum,
            "nesterov": muon.nesterov,
            "weight_decay": muon.weight_decay,
            "ns_steps": muon.ns_steps,
            "ns_dtype": muon.ns_dtype,
            "renormalize": muon.renormalize,
        },
        {"params": [p for p in params if p.ndim not in (0, 1, 4)]},
        {
            "params": [p for p in params if p.ndim <= 1],
            "weight_decay": bias_wd,
            "lr": cfg.lr if muon.bias_lr is None else muon.bias_lr,
        },
    ]
    return [g for g in groups if g["params"]]


def own_groups(groups: list[dict], model: nn.Module, steps_left: dict[str, int]) -> list[dict]:
    """``groups`` with each parameter named in ``steps_left`` moved to a group of its own
    (its former group's settings, and ``train_steps``: how many steps it trains), appended
    last so the others keep their places; one with no step left is left out."""
    if not steps_left:
        return groups
    names = {id(p): name for name, p in model.named_parameters()}
    kept, own = [], []
    for group in groups:
        params = []
        for p in group["params"]:
            name = names.get(id(p))
            if name not in steps_left:
                params.append(p)
            elif steps_left[name] > 0:
                settings = {k: v for k, v in group.items() if k != "params"}
                own.append({**settings, "params": [p], "train_steps": steps_left[name]})
        if params:
            kept.append({**group, "params": params})
    return kept + own


def one_step(kind: type, model: nn.Module) -> dict:
    """How torch's ``kind`` should step on CUDA: fused (one kernel for every tensor) where
    this torch offers it, else foreach (a few launches per group, not per tensor). Nothing
    on the CPU: torch's own choice there is the per-tensor step every recorded run took.
    Neither is config: the update is the same, up to rounding on CUDA."""
    if not all(p.is_cuda for p in model.parameters()):
        return {}
    return {"fused": True} if "fused" in inspect.signature(kind).parameters else {"foreach": True}


def build_optimizer(
    cfg: OptimCfg, model: nn.Module, total_steps: int, steps_left: dict[str, int] | None = None
) -> torch.optim.Optimizer:
    """The optimizer ``cfg`` over ``model``'s trained parameters; those named in ``steps_left``
    (``ablate.freezing``) train that many steps only, each in a group of its own."""
    if cfg.name == "muon":
        return Muon(
            own_groups(muon_groups(model, cfg), model, steps_left or {}),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
        )
    groups = own_groups(param_groups(model, cfg), model, steps_left or {})
    if cfg.name == "sgd":
        return torch.optim.SGD(
            groups,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov and cfg.momentum > 0,
            weight_decay=cfg.weight_decay,
            **one_step(torch.optim.SGD, model),
        )
    if cfg.name == "adam":
        return torch.optim.Adam(
            groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **one_step(torch.optim.Adam, model)
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(
            groups, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay, **one_step(torch.optim.AdamW, model)
        )
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
    if cfg.name == "linear":
        return 1 - (1 - cfg.final_frac) * t
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
    a second schedule multiplied onto its own. A group that trains ``train_steps`` only
    (``own_groups``) gets the schedule squeezed into them, and 0 after: for ``linear`` to 0,
    airbench94_muon's whitening-bias rule, 1 - step / steps.
    """
    total = epochs * steps_per_epoch
    own_schedule = type(optimizer).__name__ == "Ranger21"

    def factor(span: int):
        def f(step: int) -> float:
            if step >= span:
                return 0.0
            return 1.0 if own_schedule else lr_factor(cfg, step, span, steps_per_epoch)

        return f

    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, [factor(group.get("train_steps", total)) for group in optimizer.param_groups]
    )
