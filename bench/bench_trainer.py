"""ablate's trainer against a bare PyTorch loop of the same model and augmentation.

Both train the kernel study's 2-conv CNN for one epoch on the same images, alternating
A, B, B, A so that machine noise falls on both; the ratio of medians is the overhead of
the trainer (callbacks, schedule, metric accumulation, evaluation excluded from both).

    python bench/bench_trainer.py [--data DIR] [--n 10000] [--repeats 5] [--device cpu]

``--census STUDY`` counts instead of timing: the leaf aten ops (about the kernels) per training
step of the study's first point through ablate's trainer, against a bare loop of the same
model, augmentation, loss and optimizer step (the study's, built as ablate builds it). ablate's count is the difference between
epochs of 2 and 4 steps, so what an epoch does once (evaluation, the model's build) falls
out; the bare loop is counted over its steps alone.

    python bench/bench_trainer.py --census speedrun [--batch 64]

(``speedrun`` is the record airbench94_muon's recipe since issue 22; the baseline in
bench/RESULTS.md counted airbench94's, now ``speedrun_legacy``.)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from ablate.augment import augment, normalize
from ablate.config import AugCfg, from_dict
from ablate.data import load, subset, synthetic
from ablate.models import create_model
from ablate.train import train

MODEL = {"name": "plain_cnn", "depth": 2, "channels": [64, 128], "kernel_size": [3, 3]}
AUG = AugCfg(crop_padding=4, flip=True)
BATCH = 128


def bare_epoch(data, device: torch.device, seed: int) -> float:
    """The textbook loop: shuffle, augment, forward, backward, step. Seconds."""
    torch.manual_seed(seed)
    model = create_model(MODEL["name"], **{k: v for k, v in MODEL.items() if k != "name"}).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    loss_fn = nn.CrossEntropyLoss()
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    n = len(data.train_y)
    _sync(device)
    t0 = time.perf_counter()
    model.train()
    perm = torch.randperm(n, device=device, generator=gen)
    for i in range(n // BATCH):
        idx = perm[i * BATCH : (i + 1) * BATCH]
        x = normalize(augment(data.train_x[idx], AUG, gen))
        loss = loss_fn(model(x), data.train_y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return time.perf_counter() - t0


def ablate_epoch(data, device: torch.device, seed: int) -> float:
    """One epoch through ablate.train; its own epoch_time excludes the evaluation."""
    cfg = from_dict(
        {
            "epochs": 1,
            "batch_size": BATCH,
            "seed": seed,
            "precision": "fp32",
            "model": MODEL,
            "data": {"aug": {"crop_padding": AUG.crop_padding, "flip": AUG.flip}},
            "optimizer": {"name": "sgd", "lr": 0.05, "nesterov": True},
            "schedule": {"name": "cosine"},
        }
    )
    return train(cfg, data, device).metrics["epoch_time"]


def _aten_ops(fn) -> int:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    # Leaves: aten ops that call no other aten op, about the kernels a step launches.
    return sum(
        1
        for e in prof.events()
        if e.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in e.cpu_children)
    )


def census(study: str, batch: int, steps: tuple[int, int] = (2, 4)) -> dict:
    """aten ops per training step: ablate's trainer against a bare loop, on the CPU."""
    from ablate.freezing import Freeze
    from ablate.loss import build_loss
    from ablate.optim import build_optimizer
    from ablate.studies import expand, load

    overrides = [
        ("batch_size", batch),
        ("epochs", 1),
        ("precision", "fp32"),
        ("data.dataset", "synthetic"),
        ("eval.every", 1),
    ]
    cfg = expand(load(study), overrides)[0].config
    device = torch.device("cpu")

    def ablate_steps(k: int) -> int:
        data = synthetic(n_train=k * batch, n_test=batch)
        train(cfg, data, device)  # warm: the first call builds what later ones reuse
        return _aten_ops(lambda: train(cfg, data, device))

    def bare_steps(k: int) -> int:
        data = synthetic(n_train=k * batch, n_test=batch)
        model = create_model(cfg.model.name, **cfg.model.args)
        # The study's own optimizer (Muon for speedrun), as ablate builds it: the census counts
        # the loop around the step, not one optimizer against another.
        opt = build_optimizer(cfg.optimizer, model, k, Freeze(model).steps_left(0))
        loss_fn = build_loss(cfg.loss, len(data.classes))
        gen = torch.Generator().manual_seed(0)
        # Random flips: alternating ones need the epoch's flags, which a bare loop would draw once per epoch.
        aug = dataclasses.replace(cfg.data.aug, flip_mode="random")
        model.train()

        def loop():
            for i in range(k):
                idx = torch.arange(i * batch, (i + 1) * batch)
                x = normalize(augment(data.train_x[idx], aug, gen))
                loss = loss_fn(model(x), data.train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        loop()  # warm
        return _aten_ops(loop)

    (k1, k2) = steps
    ours = (ablate_steps(k2) - ablate_steps(k1)) / (k2 - k1)
    bare = bare_steps(k2) / k2
    return {
        "study": study,
        "batch": batch,
        "torch": torch.__version__,
        "ablate_ops_per_step": ours,
        "bare_ops_per_step": bare,
        "ratio": ours / bare,
    }


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", help="CIFAR-10 directory; default: synthetic images")
    ap.add_argument("--n", type=int, default=10_000, help="training images per epoch")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="bench/out/trainer.json")
    ap.add_argument("--census", metavar="STUDY", help="count aten ops per step instead of timing")
    ap.add_argument("--batch", type=int, default=64, help="with --census: the batch size (counts barely depend on it)")
    args = ap.parse_args()
    if args.census:
        result = census(args.census, args.batch)
        print(
            f"{args.census}: ablate {result['ablate_ops_per_step']:.0f} aten ops per step, bare loop "
            f"{result['bare_ops_per_step']:.0f}: {result['ratio']:.2f}x"
        )
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).with_name("census.json").write_text(json.dumps(result, indent=2))
        return
    device = torch.device(args.device)
    data = subset(load(args.data) if args.data else synthetic(n_train=args.n, n_test=1000), args.n).to(device)

    bare_epoch(data, device, 0)  # warm-up: allocator, kernels, caches
    ablate_epoch(data, device, 0)
    bare, ours = [], []
    for r in range(args.repeats):
        # Swap who goes first each round, so drift in the machine's speed falls on both.
        pair = [(bare, bare_epoch), (ours, ablate_epoch)]
        for times, epoch in pair if r % 2 == 0 else pair[::-1]:
            times.append(epoch(data, device, r))
    result = {
        "device": str(device),
        "torch": torch.__version__,
        "images": len(data.train_y),
        "bare_s": statistics.median(bare),
        "ablate_s": statistics.median(ours),
        "ratio_ablate_over_bare": statistics.median(ours) / statistics.median(bare),
        "bare_all": bare,
        "ablate_all": ours,
    }
    print(f"{'loop':<8}{'median epoch s':>16}{'images/s':>12}")
    for name, key in (("bare", "bare_s"), ("ablate", "ablate_s")):
        print(f"{name:<8}{result[key]:>16.3f}{result['images'] / result[key]:>12.0f}")
    print(f"ablate / bare = {result['ratio_ablate_over_bare']:.3f}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
