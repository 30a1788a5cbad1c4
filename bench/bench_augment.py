"""Images per second: ablate's batch augmentation against a torchvision DataLoader.

Both do the same augmentation (random crop with 4-pixel zero padding, horizontal flip,
an 8x8 cutout, normalisation) on the same images: ablate as a few tensor ops per batch
of 512, torchvision per image with PIL transforms in a DataLoader, with 0 and 2 workers.
Each pipeline runs one shuffled pass over the images per repeat, alternating pipelines
so that machine noise falls on all of them; the median pass counts. Worker start-up is
inside the loader's time, as it is once per epoch in a plain training loop.

    python bench/bench_augment.py [--n 10000] [--data DIR] [--repeats 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ablate.augment import augment, normalize
from ablate.config import AugCfg
from ablate.data import load, synthetic
from ablate.pil_pipeline import PilImages

BATCH = 512
PAD, CUTOUT = 4, 8
AUG = AugCfg(crop_padding=PAD, flip=True, cutout=CUTOUT)
OUT = Path(__file__).resolve().parent / "out" / "augment.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def ablate_pass(x: torch.Tensor, y: torch.Tensor, device: torch.device, seed: int) -> float:
    """Seconds for one shuffled pass: index a batch, augment, normalise."""
    gen = torch.Generator(device=device).manual_seed(seed)
    _sync(device)
    t0 = time.perf_counter()
    for idx in torch.randperm(len(y), device=device, generator=gen).split(BATCH):
        _batch = normalize(augment(x[idx], AUG, gen)), y[idx]  # made and dropped: the cost is the point
    _sync(device)
    return time.perf_counter() - t0


def loader_pass(images: PilImages, workers: int, device: torch.device, seed: int) -> float:
    """Seconds for one shuffled pass of a DataLoader, batches moved to ``device``."""
    torch.manual_seed(seed)
    loader = DataLoader(images, batch_size=BATCH, shuffle=True, num_workers=workers, pin_memory=device.type == "cuda")
    _sync(device)
    t0 = time.perf_counter()
    for xb, yb in loader:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
    _sync(device)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=10000, help="images per pass")
    ap.add_argument("--data", default=None, help="CIFAR-10 directory (default: synthetic images)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    device = torch.device(args.device)
    ds = load(args.data) if args.data else synthetic(n_train=args.n, n_test=10)
    x, y = ds.train_x[: args.n], ds.train_y[: args.n]
    images = PilImages(x, y, AUG)  # the same pipeline the `speed` study trains with
    xd, yd = x.to(device), y.to(device)
    ablate_pass(xd[:BATCH], yd[:BATCH], device, 0)  # warm-up: kernels, allocator

    names = ["ablate"] + [f"dataloader_w{w}" for w in args.workers]
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.repeats):
        times["ablate"].append(ablate_pass(xd, yd, device, rep))
        for w in args.workers:
            times[f"dataloader_w{w}"].append(loader_pass(images, w, device, rep))
    rate = {name: len(y) / statistics.median(t) for name, t in times.items()}
    speedup = {name: rate["ablate"] / rate[name] for name in names[1:]}

    labels = {"ablate": f"ablate augment+normalize, batch {BATCH}"}
    labels.update({f"dataloader_w{w}": f"torchvision DataLoader, {w} workers" for w in args.workers})
    print(
        f"{len(y)} images ({args.data or 'synthetic'}), device {device}, "
        f"{torch.get_num_threads()} torch threads, {os.cpu_count()} cores, "
        f"median of {args.repeats} passes"
    )
    print(f"{'pipeline':44s} {'images/s':>10s} {'ablate is':>10s}")
    for name in names:
        ratio = "" if name == "ablate" else f"{speedup[name]:.1f}x"
        print(f"{labels[name]:44s} {rate[name]:10.0f} {ratio:>10s}")

    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(
        json.dumps(
            {
                "n": len(y),
                "data": args.data or "synthetic",
                "device": str(device),
                "batch": BATCH,
                "aug": {"crop_padding": PAD, "flip": True, "cutout": CUTOUT},
                "torch_threads": torch.get_num_threads(),
                "cpu_count": os.cpu_count(),
                "torch": torch.__version__,
                "repeats": args.repeats,
                "seconds": times,
                "images_per_s": rate,
                "ablate_speedup": speedup,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
