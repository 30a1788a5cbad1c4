"""The record's first 30 steps, for tests/test_record_parity.py to hold ablate's against.

Imports airbench94_muon.py (the speed record) at run time, builds ITS CifarNet at a small
width in fp32 with ITS blocks, loads the initial weights ablate's trainer builds for the same
config and seed, and trains it with ITS Muon (its Newton-Schulz step made fp32), torch's SGD
on the other groups as it sets them up, and its lr rules (linear to 0; the whitening bias's
own 1 - step/N, then its gradient detached): on one batch of the whole synthetic set, every
step, as ablate's trainer sees it (a batch the size of the set: every epoch is one step, in
an order BN and a mean loss do not notice; no augmentation). Only its numbers are kept, in
tests/assets/record_parity.json, with the config ablate's side trains:

    python bench/record_parity.py [--record PATH] [--out tests/assets/record_parity.json]

PATH defaults to .device/airbench/airbench94_muon.py (bench/prepare_device.sh), else the
file at the mirror's HEAD (/work/.mirror/KellerJordan+cifar10-airbench/repo) extracted to a
temporary file. The record's code never enters the repository.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ablate.augment import normalize
from ablate.config import from_dict
from ablate.data import synthetic
from ablate.models import create_model
from ablate.train import DATA_INIT_IMAGES

MIRROR = Path("/work/.mirror/KellerJordan+cifar10-airbench/repo")
DEVICE_COPY = Path(".device/airbench/airbench94_muon.py")
N, STEPS, WHITEN_STEPS, WIDTHS = 64, 30, 10, [8, 16, 16]
# The record's hyperparameters, for its loss summed over the batch.
BIAS_LR, HEAD_LR, DECAY = 0.053, 0.67, 2e-6 * N

# ablate's side: the same recipe for the batch mean (lrs x N, weight decays / N; see
# studies/speedrun.toml), fp32 throughout, Newton-Schulz in fp32, evaluated once at the end.
CONFIG = {
    "epochs": STEPS,
    "batch_size": N,
    "precision": "fp32",
    "data": {"dataset": "synthetic"},
    "model": {
        "name": "speednet",
        "widths": WIDTHS,
        "bn_momentum": 0.4,
        "bias_lr_scale": 1.0,
        "logit_scale": 1 / WIDTHS[-1],  # the record divides by the last block's width
        "head_std": 1.0,
        "whiten_bias_steps": WHITEN_STEPS,
    },
    "optimizer": {
        "name": "muon",
        "lr": HEAD_LR * N,
        "momentum": 0.85,
        "nesterov": True,
        "weight_decay": DECAY / HEAD_LR / N,
        "muon": {
            "lr": 0.24,
            "momentum": 0.6,
            "nesterov": True,
            "ns_steps": 3,
            "ns_dtype": "float32",
            "renormalize": True,
            "bias_lr": BIAS_LR * N,
            "bias_weight_decay": DECAY / BIAS_LR / N,
        },
    },
    "schedule": {"name": "linear", "final_frac": 0.0},
    "loss": {"label_smoothing": 0.2},
    "eval": {"every": STEPS},
}
DATA = {"n_train": N, "n_test": 32, "seed": 0}


def record_path(given: str | None) -> tuple[Path, str]:
    """The record's file, and where it came from, for ``produced_by``."""
    if given:
        return Path(given), given
    if DEVICE_COPY.is_file():
        return DEVICE_COPY, str(DEVICE_COPY)
    text = subprocess.run(
        ["git", "-C", str(MIRROR), "show", "HEAD:airbench94_muon.py"], capture_output=True, text=True, check=True
    ).stdout
    tmp = Path(tempfile.mkdtemp()) / "airbench94_muon.py"
    tmp.write_text(text)
    return tmp, "the mirror's HEAD"


def import_record(path: Path):
    """The record's module, its @torch.compile made the identity (its module-level code only
    reads sys.argv[0] and defines things)."""
    compile_ = torch.compile
    torch.compile = lambda fn=None, **kw: fn if fn is not None else (lambda f: f)
    try:
        spec = importlib.util.spec_from_file_location("airbench94_muon", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        torch.compile = compile_
    return module


def ablate_start(cfg) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """ablate's initial weights for ``cfg``, built as its trainer builds them, and the batch."""
    data = synthetic(**DATA)
    torch.manual_seed(cfg.seed)
    model = create_model(cfg.model.name, num_classes=10, **cfg.model.args)
    model.init_from_data(normalize(data.train_x[:DATA_INIT_IMAGES], stats=data.stats))
    return model, normalize(data.train_x, stats=data.stats), data.train_y


def record_model(rec, ours: nn.Module) -> nn.Module:
    """The record's CifarNet at ``WIDTHS`` (its own ConvGroups), in fp32, with ablate's weights."""
    model = rec.CifarNet()
    whiten = model.whiten.out_channels
    c = [whiten, *WIDTHS]
    model.layers = nn.Sequential(nn.GELU(), *(rec.ConvGroup(c[i], c[i + 1]) for i in range(3)), nn.MaxPool2d(3))
    model.head = nn.Linear(WIDTHS[-1], 10, bias=False)
    model.float()
    names = {"0.weight": "whiten.weight", "0.bias": "whiten.bias", "7.weight": "head.weight"}
    for block in range(3):  # speednet's blocks sit at 2, 3, 4: conv, pool, BN, GELU, conv, BN, GELU
        for ours_i, theirs in ((0, "conv1"), (2, "norm1"), (4, "conv2"), (5, "norm2")):
            for key in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked"):
                names[f"{2 + block}.{ours_i}.{key}"] = f"layers.{1 + block}.{theirs}.{key}"
    state = ours.state_dict()
    theirs = model.state_dict()
    mapped = {names[k]: v for k, v in state.items() if names.get(k) in theirs}
    assert set(mapped) == set(theirs), sorted(set(theirs) - set(mapped))
    model.load_state_dict(mapped)
    return model


def record_losses(rec, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[float]:
    """The record's training loop's rules (its main()), on the batch (x, y) every step."""
    filters = [p for p in model.parameters() if len(p.shape) == 4 and p.requires_grad]
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    sgd = torch.optim.SGD(
        [
            dict(params=[model.whiten.bias], lr=BIAS_LR, weight_decay=DECAY / BIAS_LR),
            dict(params=norm_biases, lr=BIAS_LR, weight_decay=DECAY / BIAS_LR),
            dict(params=[model.head.weight], lr=HEAD_LR, weight_decay=DECAY / HEAD_LR),
        ],
        momentum=0.85,
        nesterov=True,
    )
    muon = rec.Muon(filters, lr=0.24, momentum=0.6, nesterov=True)
    for opt in (sgd, muon):
        for group in opt.param_groups:
            group["initial_lr"] = group["lr"]
    losses = []
    bf16 = torch.Tensor.bfloat16
    torch.Tensor.bfloat16 = torch.Tensor.float  # its Newton-Schulz step in fp32: its only bf16 cast
    try:
        model.train()
        for step in range(STEPS):
            out = model(x, whiten_bias_grad=step < WHITEN_STEPS)
            loss = F.cross_entropy(out, y, label_smoothing=0.2, reduction="sum")
            loss.backward()
            losses.append(loss.item() / len(y))
            for group in sgd.param_groups[:1]:
                group["lr"] = group["initial_lr"] * (1 - step / WHITEN_STEPS)
            for group in sgd.param_groups[1:] + muon.param_groups:
                group["lr"] = group["initial_lr"] * (1 - step / STEPS)
            sgd.step()
            muon.step()
            model.zero_grad(set_to_none=True)
    finally:
        torch.Tensor.bfloat16 = bf16
    return losses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--record", help="airbench94_muon.py [default: .device/airbench/ or the mirror's]")
    ap.add_argument("--out", default="tests/assets/record_parity.json")
    args = ap.parse_args()
    torch.set_num_threads(1)
    path, where = record_path(args.record)
    rec = import_record(path)
    cfg = from_dict(CONFIG)
    ours, x, y = ablate_start(cfg)
    losses = record_losses(rec, record_model(rec, ours), x, y)
    out = {
        "produced_by": (
            f"bench/record_parity.py with airbench94_muon.py from {where} (KellerJordan/cifar10-airbench "
            f"at f1c599c), torch {torch.__version__}, CPU, one thread: its CifarNet at widths {WIDTHS} "
            "(its own ConvGroups, .float()), loaded with ablate's initial weights for the config below "
            "(seed 0), trained by its Muon (Newton-Schulz in fp32), torch SGD on its three groups and "
            "its lr rules (its SGD unfused: fused=True is its CUDA kernel), the whitening bias detached "
            f"after {WHITEN_STEPS} steps; its loss summed over the batch, divided by {N}, before each of "
            f"{STEPS} steps on the whole synthetic set"
        ),
        "data": DATA,
        "config": CONFIG,
        "losses": losses,
    }
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"{args.out}: {STEPS} losses, {losses[0]:.4f} -> {losses[-1]:.4f}", file=sys.stderr)


if __name__ == "__main__":
    main()
