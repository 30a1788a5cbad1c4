"""A few epochs of each long recipe (``best``, ``ranger``, ``densenet``), timed, so that
their full length on this device is known before a GPU window is spent on one.

Each recipe is expanded by ablate's own study loader and cut to ``--epochs`` epochs (a
``switch`` moves to the last of them, so both phases run), then trained once through
``ablate.train.train`` on the data given. Per epoch: training time (the trainer's own
``epoch_time``) and wall time between two epochs (training and evaluation). The projection
is the last epoch's wall time times the recipe's own epochs: the first epoch also pays for
cuDNN's kernel tuning and the allocator's growth.

    python bench/bench_recipes.py --data DIR [--recipes best ranger densenet] [--epochs 2] [--budget 120]
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from _record import write_json

from ablate.config import parse_assignment
from ablate.data import load, synthetic
from ablate.studies import expand
from ablate.studies import load as load_study
from ablate.train import Hooks, train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=["best", "ranger", "densenet"])
    ap.add_argument("--data", default="synthetic", help="CIFAR-10 directory, or 'synthetic'")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget", type=float, help="seconds: a recipe is skipped once this is spent")
    ap.add_argument("--out", default="bench/out/recipes.json")
    args = ap.parse_args()
    began = time.perf_counter()
    device = torch.device(args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = (synthetic() if args.data == "synthetic" else load(args.data)).to(device)
    report = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        "epochs": args.epochs,
        "sets": args.sets,
        "recipes": [],
        "skipped": [],
    }
    write_json(out, report)
    for name in args.recipes:
        if args.budget and time.perf_counter() - began > args.budget:
            report["skipped"].append(name)
            write_json(out, report)
            print(f"{name}: skipped, the budget of {args.budget:.0f} s is spent", flush=True)
            continue
        study = load_study(name)
        overrides = [parse_assignment(s) for s in args.sets]
        if args.data == "synthetic":
            overrides.append(("data.dataset", "synthetic"))
        cfg = expand(study, overrides, seeds=1)[0].config
        full = cfg.epochs
        cut = dataclasses.replace(cfg, epochs=args.epochs)
        if cfg.switch.at_epoch:
            cut = dataclasses.replace(cut, switch=dataclasses.replace(cfg.switch, at_epoch=args.epochs - 1))
        stamps = [time.perf_counter()]
        epochs: list[dict] = []

        def on_epoch(e, m, stamps=stamps, epochs=epochs):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            stamps.append(time.perf_counter())
            epochs.append(
                {
                    "epoch": e,
                    "epoch_time": m["epoch_time"],
                    "wall_s": stamps[-1] - stamps[-2],
                    "test_acc": m.get("test_acc"),
                    "images_per_s": m["images_per_s"],
                }
            )

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        result = train(cut, data, device, Hooks(epoch=on_epoch))
        last = epochs[-1]["wall_s"] if epochs else None
        entry = {
            "recipe": name,
            "model": cfg.model.name,
            "params": result.metrics.get("params"),
            "status": result.status,
            "full_epochs": full,
            "epochs": epochs,
            "projected_full_s": round(last * full, 1) if last else None,
            "peak_memory_mib": round(torch.cuda.max_memory_allocated(device) / 2**20)
            if device.type == "cuda"
            else None,
        }
        report["recipes"].append(entry)
        write_json(out, report)
        print(
            f"{name}: {[round(e['wall_s'], 2) for e in epochs]} s per epoch; {full} epochs ~ "
            f"{entry['projected_full_s']} s ({(entry['projected_full_s'] or 0) / 60:.1f} min)",
            flush=True,
        )


if __name__ == "__main__":
    main()
