"""Drive airbench94 (github.com/KellerJordan/cifar10-airbench, legacy/airbench94.py), or the
record airbench94_muon.py, unmodified, for the side-by-side with ablate's fast and speedrun
recipes: one warm-up run, then N timed runs.

The record's ``main(run, model)`` takes its model, which its own ``__main__`` builds once and
compiles (mode max-autotune) so that the runs after the warm-up reuse the compiled code; this
driver does the same two calls, and the warm-up (the compile) stays off the clock.

airbench's code is measured, never vendored: bench/prepare_device.sh copies it into the
git-ignored .device/airbench/, and this driver imports it from there. Its own clock is kept:
CUDA events around the whitening init, the training epochs and the final (test-time
augmented) evaluation; data loading and its per-epoch evaluations run off the clock. The
driver reads that clock's final value, and the accuracies, from the row airbench prints at
the end of each run (by wrapping its ``print_training_details``, which still prints).

airbench reads ``cifar10/train.pt`` and ``cifar10/test.pt`` relative to the working
directory and would download CIFAR-10 if they were missing: this driver refuses instead
(bench/export_cifar_pt.py writes them). Needs CUDA.

    python bench/bench_airbench.py --airbench .device/airbench/airbench94.py --root DIR [--runs 5]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

from _record import over_budget, sd, write_json


def summarise(runs: list[dict]) -> dict:
    if not runs:
        return {"n": 0}
    tta = [r["tta_val_acc"] for r in runs]
    plain = [r["val_acc"] for r in runs]
    secs = [r["seconds"] for r in runs]
    return {
        "n": len(runs),
        "mean_acc": statistics.fmean(tta),
        "std_acc": sd(tta),
        "mean_acc_no_tta": statistics.fmean(plain),
        "std_acc_no_tta": sd(plain),
        "mean_seconds": statistics.fmean(secs),
        "std_seconds": sd(secs),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--airbench", required=True, help="path of airbench94.py or airbench94_muon.py")
    ap.add_argument("--root", required=True, help="folder holding cifar10/train.pt and cifar10/test.pt")
    ap.add_argument("--runs", type=int, default=5, help="timed runs after the warm-up")
    ap.add_argument("--budget", type=float, help="seconds: start no run that would end past this")
    ap.add_argument("--out", default="bench/out/airbench.json")
    args = ap.parse_args()
    began = time.perf_counter()
    out = Path(args.out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    source = Path(args.airbench).resolve()
    root = Path(args.root).resolve()
    report: dict = {"airbench": str(source), "runs": [], "warmup": None, "stopped_by_budget": False}

    import torch

    if not torch.cuda.is_available():
        report["skipped"] = "no CUDA: airbench94 runs on a CUDA device only"
        write_json(out, report)
        print(report["skipped"])
        return
    for name in ("train.pt", "test.pt"):
        if not (root / "cifar10" / name).is_file():
            sys.exit(
                f"{root / 'cifar10' / name} is missing (airbench would try to download it): "
                "write it with bench/export_cifar_pt.py"
            )
    if not source.is_file():
        sys.exit(f"{source} is missing: run bench/prepare_device.sh")

    report.update(
        sha256=hashlib.sha256(source.read_bytes()).hexdigest(),
        torch=torch.__version__,
        device_name=torch.cuda.get_device_name(0),
        timing="airbench's own: CUDA events around whitening init, training and the final TTA evaluation",
    )
    spec = importlib.util.spec_from_file_location("airbench94", source)
    ab = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ab)  # defines things only: its runs sit under `if __name__ == "__main__"`
    report["hyp"] = ab.hyp

    final: dict = {}
    printer = ab.print_training_details

    def spy(variables, is_final_entry):
        if is_final_entry:  # the clock's final value: total_time_seconds (airbench94), time_seconds (the record)
            final.update(
                {k: variables.get(k) for k in ("tta_val_acc", "val_acc", "epoch")},
                seconds=variables.get("total_time_seconds", variables.get("time_seconds")),
            )
        printer(variables, is_final_entry)

    ab.print_training_details = spy
    os.chdir(root)  # airbench opens 'cifar10/...' relative to here
    args_of_main = list(inspect.signature(ab.main).parameters)
    model = None
    if args_of_main[1:2] == ["model"]:  # the record: one model, compiled once, as its __main__ does
        model = ab.CifarNet().cuda().to(memory_format=torch.channels_last)
        model.compile(mode="max-autotune")
        report["compiled"] = "model.compile(mode='max-autotune'), as its __main__; the warm-up run compiles"

    def one(run) -> dict:
        final.clear()
        t0 = time.perf_counter()
        acc = ab.main(run) if model is None else ab.main(run, model)
        return {
            "run": run,
            "tta_val_acc": float(acc),
            "val_acc": float(final["val_acc"]),
            "seconds": float(final["seconds"]),
            "host_seconds": time.perf_counter() - t0,
        }

    ab.print_columns(ab.logging_columns_list, is_head=True)
    try:
        report["warmup"] = one("warmup")  # airbench's own warm-up: random labels, same work
        write_json(out, report)
        for run in range(args.runs):
            done = report["runs"]
            if done and over_budget(began, args.budget, [r["host_seconds"] for r in done + [report["warmup"]]]):
                report["stopped_by_budget"] = True
                print(f"budget of {args.budget:.0f} s reached: {len(done)} of {args.runs} runs")
                write_json(out, report)
                break
            done.append(one(run))
            report.update(summarise(done))
            write_json(out, report)
    except KeyboardInterrupt:  # a caller's timeout: the runs that finished are on record
        report["interrupted"] = True
        write_json(out, report)
        raise SystemExit(130) from None
    s = summarise(report["runs"])
    if s["n"]:
        print(
            f"{source.stem}: {s['n']} runs, acc {s['mean_acc']:.4f} +- {s['std_acc']:.4f} with TTA "
            f"({s['mean_acc_no_tta']:.4f} without), {s['mean_seconds']:.3f} s per run"
        )


if __name__ == "__main__":
    main()
