"""Fused training: G runs whose models share their shapes, trained in one model step.

How members are stacked. Each member keeps everything a lone run has: its own ``nn.Module``
(built from its own seed), its own optimizer and schedule (built exactly as alone, so a
learning rate, a weight decay, an optimizer kind, or Ranger21's per-tensor norms are per
member with no optimizer written here), its own weight average, data generator and probes.
Only the forward and backward pass are shared: every step, ``Stack`` stacks the members'
parameters with ``torch.stack`` (so autograd routes each slice of the gradient back to that
member's own ``.grad``) and their buffers, and calls the first member's module through
``torch.func.functional_call`` under ``torch.func.vmap``: one launch of each kernel (a
convolution becomes a grouped convolution) does the work of G runs. Batch norm updates
the stacked running statistics in place, which are copied back to each member's own
buffers, so evaluation (done per member, on its own module) uses its own statistics.
The optimizer steps stay per member: G small launches, not one.

What may fuse (``fuse_key``): runs that agree on everything that fixes the shapes and the
steps of the shared pass: the model and its arguments, the data (set, augmentation,
pipeline), batch size, epochs, train subset and precision. They may differ in the seed
and in everything that lives per member: optimizer (kind, learning rate, weight decay,
...), schedule, switch, loss (label smoothing), weight averaging, evaluation and probes.

What trains alone, as before: a model whose forward draws random numbers (dropout > 0):
vmap cannot give each member the masks it would draw alone from the global generator, so
rather than train it with other masks it is not fused; a model with an op vmap cannot
batch (DenseNet's memory-efficient checkpointing); the PIL pipeline. Both model cases are
found by running the model once under vmap on the meta device (no memory, no compute), so
the rule holds for any registered model without a list to keep.

Why the numbers are equal up to rounding only: a grouped convolution sums in another order
than G single ones, and SGD with momentum carries the last-bit differences forward
(``../shared/docs/fusion-facts.md``). The data order, the augmentation and the
initialisation are bitwise those of the lone run: each member draws from its own generator,
seeded as alone (``ablate.train``).
"""

from __future__ import annotations

import functools
import json
import warnings
from typing import Any, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ablate.config import RunConfig, to_dict
from ablate.models import create_model

# What the members of a group share: everything else is per member.
SHARED = ("model", "data", "batch_size", "epochs", "train_subset", "precision")


def fuse_key(cfg: RunConfig) -> str | None:
    """Runs with the same key may train as one group; None: this run trains alone."""
    if why_alone(cfg) is not None:
        return None
    d = to_dict(cfg)
    return json.dumps({k: d[k] for k in SHARED}, sort_keys=True)


def why_alone(cfg: RunConfig) -> str | None:
    """Why a run can never be fused, or None."""
    if cfg.data.pipeline != "device":
        return f"data.pipeline {cfg.data.pipeline} loads each run's batches on its own"
    return _vmap_refusal(cfg.model.name, json.dumps(cfg.model.args, sort_keys=True))


@functools.lru_cache(maxsize=256)
def _vmap_refusal(name: str, args_json: str) -> str | None:
    """One training step of two members under vmap, on the meta device: None if it runs."""
    try:
        with torch.device("meta"):
            model = create_model(name, **json.loads(args_json)).train()
            params = {k: torch.empty(2, *p.shape, requires_grad=p.requires_grad) for k, p in model.named_parameters()}
            buffers = {k: torch.empty(2, *b.shape, dtype=b.dtype) for k, b in model.named_buffers()}
            x, y = torch.empty(2, 2, 3, 32, 32), torch.zeros(2, 2, dtype=torch.long)

            def loss(p, b, x, y):
                return F.cross_entropy(torch.func.functional_call(model, (p, b), (x,)), y)

            torch.func.vmap(loss)(params, buffers, x, y).sum().backward()
    except Exception as e:  # noqa: BLE001 - whatever vmap refuses, the run trains alone
        if "random" in str(e):
            return f"model {name} draws random numbers in its forward pass (dropout)"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:100]
        return f"model {name} has an op vmap cannot batch ({type(e).__name__}: {first})"
    return None


def group(configs: Sequence[RunConfig], cap: int | None = None) -> list[list[int]]:
    """Indices of ``configs`` in groups that may train fused, in order of their first member,
    each at most ``cap`` long (None: no limit); a run that cannot fuse is a group of one."""
    buckets: dict[Any, list[int]] = {}
    for i, cfg in enumerate(configs):
        key = fuse_key(cfg) if cap != 1 else None
        buckets.setdefault(("alone", i) if key is None else key, []).append(i)
    out = []
    for members in sorted(buckets.values(), key=lambda m: m[0]):
        size = cap or len(members)
        out += [members[j : j + size] for j in range(0, len(members), size)]
    return sorted(out, key=lambda m: m[0])


class Stack:
    """The members' modules as one batched module: ``stack(x)`` with x [G, B, ...] gives
    the members' outputs [G, B, ...], each from its own parameters and buffers."""

    def __init__(self, models: Iterable[nn.Module]):
        self.models = list(models)
        template = self.models[0]
        self.param_names = [n for n, _ in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        members = [(dict(m.named_parameters()), dict(m.named_buffers())) for m in self.models]
        self.params = [[p[n] for p, _ in members] for n in self.param_names]
        self.buffers = [[b[n] for _, b in members] for n in self.buffer_names]

        def one(params, buffers, x):
            return torch.func.functional_call(template, (params, buffers), (x,))

        # randomness="error" (the default), said aloud: a random op here would give every
        # member masks other than its own, so it must fail rather than train quietly.
        self.forward = torch.func.vmap(one, randomness="error")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        params = {n: torch.stack(ps) for n, ps in zip(self.param_names, self.params)}
        buffers = {n: torch.stack(bs) for n, bs in zip(self.buffer_names, self.buffers)}
        out = self.forward(params, buffers, x)
        if buffers:
            with torch.no_grad():  # the running statistics, updated in the stacked copies, go home
                own = [b for bs in self.buffers for b in bs]
                torch._foreach_copy_(own, [t for n in self.buffer_names for t in buffers[n].unbind(0)])
        return out


def compiled(fn: Callable, backend: str | None = None) -> Callable:
    """``fn`` through torch.compile in a mode that captures CUDA graphs (the step has fixed
    shapes), or ``fn`` itself, with a warning, if compiling fails at the first call.

    Optional and off by default (``ablate run --compile``), on CUDA. ``backend``: compile with
    that backend instead, on any device; the tests compile on the CPU with ``aot_eager``.
    bench/gpu_check.sh measures the CUDA mode."""
    fast = torch.compile(fn, mode="reduce-overhead") if backend is None else torch.compile(fn, backend=backend)
    chosen: list[Callable] = []

    def call(*args):
        if chosen:
            return chosen[0](*args)
        try:
            out = fast(*args)  # compiles before it runs anything: a failure here changed nothing
        except Exception as e:  # noqa: BLE001
            warnings.warn(
                f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); the step runs uncompiled", stacklevel=2
            )
            chosen.append(fn)
            return fn(*args)
        chosen.append(fast)
        return out

    return call


def member_losses(loss_fns: Sequence[nn.Module], out: torch.Tensor, y: torch.Tensor, same: bool) -> torch.Tensor:
    """Each member's loss [G] from outputs [G, B, C] and labels [G, B]: one batched call
    when every member's loss is configured alike (``same``), else one call per member."""
    if same:
        return torch.func.vmap(loss_fns[0])(out, y)
    return torch.stack([fn(o, t) for fn, o, t in zip(loss_fns, out, y)])
