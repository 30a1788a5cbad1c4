"""Fused training (``ablate run --fuse G``) against one point at a time and against packing
(``--per-gpu K``), in point-equivalents per hour, all in one run.

For each ``STUDY/NAME=K:G`` of ``--runs``, in the order given (``--per-gpu K --fuse G``),
``ablate run STUDY`` runs into a database of its own for a fixed window of wall-clock time and is then stopped
as a user stops it (SIGINT: the members stop after their current step and go back to
pending). The grid is larger than any window can train, so every setup runs at full load.
Work is read back from the database: epochs trained by all runs, finished or not, over the
epochs of a point (``--epochs``), so a point cut off halfway counts for its epochs. Rates:

- ``points_per_hour``: over the whole window, from launch to stop (start-up included);
- ``steady_points_per_hour``: the epochs recorded after the first one, over the time from the
  first record to the last: the rate once running, without imports, data loading and the
  first epoch's kernel tuning (a fused group records its epochs together, so this is the
  rate between those bursts; None when the records span under a quarter of the window);
- ``vs_alone``: each rate over the same study's one-at-a-time setup (``K:G`` = ``1:1``).

``toy_suite_minutes``: the report's toy studies at 5 seeds and 20 epochs (about 450
runs) at the best steady rate measured, for the target of 10 minutes.

GPU utilisation and memory come from ``nvidia-smi`` sampled every 500 ms (where it exists).
``--repeat N`` runs the whole list N times, alternated, for a noisy machine.

``--check N``: first, N seeds of the first study's first point train on ``--check-images``
training images for ``--check-epochs`` epochs in this process, one by one and then as one
fused group: the largest difference in any per-epoch loss and accuracy (the fusion's
rounding on this device and precision), the spread between the seeds, and the time ratio
fused/alone.

    python bench/bench_fusion.py --data DIR --epochs 20 --seeds 5 --window 30 --budget 250 \\
        --runs depth/alone=1:1 depth/packed8=8:1 depth/fused5=1:5 depth/fused5x8=8:5
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _record import write_json
from bench_packing import Sampler, query, stop

STOP_S = 12  # what stopping a runner takes, K processes included, in the budget's arithmetic
TOY_RUNS = 450  # the report's toy studies (kernel ... loss), about 90 grid points, at 5 seeds


def parse_run(text: str) -> tuple[str, str, int, int]:
    study, _, rest = text.partition("/")
    name, _, kg = rest.partition("=")
    k, _, g = kg.partition(":")
    if not (study and name and k.isdigit() and g.isdigit()):
        raise SystemExit(f"--runs takes STUDY/NAME=K:G (per-gpu K, fuse G), got {text!r}")
    return study, name, int(k), int(g)


def epochs_on_record(db: Path) -> int:
    try:
        return query(db, "SELECT count(*) FROM metrics WHERE name = 'epoch_time'")[0][0] if db.exists() else 0
    except sqlite3.Error:
        return 0


def measure(study: str, name: str, k: int, g: int, args, workdir: Path, round_: int) -> dict:
    tag = f"{study}-{name}-{round_}"
    db = workdir / f"{tag}.db"
    for p in workdir.glob(f"{tag}.db*"):
        p.unlink()
    cmd = [
        sys.executable,
        "-m",
        "ablate",
        "run",
        study,
        "--per-gpu",
        str(k),
        "--fuse",
        str(g),
        "--seeds",
        str(args.seeds),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--db",
        f"sqlite:///{db}",
        "--checkpoints",
        str(workdir / f"{tag}-checkpoints"),
    ]
    if args.data:
        cmd += ["--data", args.data]
    for s in args.sets:
        cmd += ["--set", s]
    print(f"\n--- {tag}: {' '.join(cmd)}", flush=True)
    sampler = Sampler(workdir / f"{tag}-gpu.csv")
    log = open(workdir / f"{tag}.log", "w")
    launched = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    changes: list[tuple[float, int]] = []  # (time, epochs on record) whenever that count moved
    try:
        while proc.poll() is None and time.time() - launched < args.window:
            n = epochs_on_record(db)
            if n and (not changes or n != changes[-1][1]):
                changes.append((time.time(), n))
            time.sleep(0.2)
    finally:  # our own timeout (SIGINT) must not leave the runner on the device for the next step
        stopped = time.time()
        finished_early = stop(proc, args.grace)
    ended = time.time()
    sampler.stop()
    log.close()

    epochs = epochs_on_record(db)
    runs = query(db, "SELECT status, notes FROM runs") if db.exists() else []
    fused = sum("trained fused" in (notes or "") for _, notes in runs)
    window = stopped - launched
    steady = None
    # Two bursts close together (K processes ending their first epochs at once) say nothing of the rate.
    if len(changes) > 1 and changes[-1][0] - changes[0][0] >= max(1.0, args.window / 4):
        (t0, n0), (t1, n1) = changes[0], changes[-1]
        steady = (n1 - n0) / args.epochs / (t1 - t0) * 3600
    first_epoch = changes[0] if changes else None
    gpu = sampler.summary(first_epoch[0] if first_epoch else launched, stopped)
    result = {
        "study": study,
        "setup": name,
        "per_gpu": k,
        "fuse": g,
        "round": round_,
        "rc": proc.returncode,
        "finished_before_window": finished_early,
        "points_in_grid": len(runs),
        "points_complete": sum(s in ("complete", "diverged") for s, _ in runs),
        "points_failed": sum(s == "failed" for s, _ in runs),
        "runs_trained_fused": fused,
        "epochs_trained": epochs,
        "point_equivalents": round(epochs / args.epochs, 3),
        "window_s": round(window, 2),
        "first_epoch_after_s": round(first_epoch[0] - launched, 2) if first_epoch else None,
        "stop_s": round(ended - stopped, 2),
        "points_per_hour": round(epochs / args.epochs / window * 3600, 1) if window > 0 else None,
        "steady_points_per_hour": round(steady, 1) if steady else None,
        **gpu,
        "command": cmd,
    }
    print(json.dumps({k_: v for k_, v in result.items() if k_ != "command"}), flush=True)
    return result


def check(args) -> dict:
    """Fused against alone in this process, on this device: the rounding and the time."""
    import torch

    from ablate.config import parse_assignment
    from ablate.data import load, subset, synthetic
    from ablate.studies import expand
    from ablate.studies import load as load_study
    from ablate.train import Hooks, train, train_group

    overrides = [parse_assignment(s) for s in args.sets] + [("epochs", args.check_epochs)]
    if args.data in (None, "synthetic"):
        overrides.append(("data.dataset", "synthetic"))
    study = parse_run(args.runs[0])[0]
    point = expand(load_study(study), overrides, seeds=1)[0]
    cfgs = [dataclasses.replace(point.config, seed=s, train_subset=None) for s in range(args.check)]
    data = synthetic() if args.data in (None, "synthetic") else load(args.data)
    data = subset(data, args.check_images).to(args.device)
    device = torch.device(args.device)

    def timed(fn):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    def recorder():
        seen: list[dict] = []
        return seen, Hooks(epoch=lambda e, m: seen.append(dict(m)))

    train(dataclasses.replace(cfgs[0], seed=1000, epochs=1), data, device)  # warm-up: kernels, allocator
    times = []
    for _ in range(args.check_repeat):  # alternated: a noisy machine hits both sides alike
        alone = [recorder() for _ in cfgs]
        alone_s = timed(lambda alone=alone: [train(c, data, device, h) for c, (_, h) in zip(cfgs, alone)])
        fused = [recorder() for _ in cfgs]
        fused_s = timed(lambda fused=fused: train_group(cfgs, data, device, [h for _, h in fused]))
        times.append(
            {
                "alone_s": round(alone_s, 3),
                "fused_s": round(fused_s, 3),
                "fused_over_alone_time": round(fused_s / alone_s, 3),
            }
        )
    worst: dict[str, float] = {}
    for (a, _), (f, _) in zip(alone, fused):
        for ma, mf in zip(a, f):
            for key in ("train_loss", "test_loss", "train_acc", "test_acc"):
                worst[key] = max(worst.get(key, 0.0), abs(ma[key] - mf[key]))
    spread = statistics.pstdev([a[-1]["test_loss"] for a, _ in alone]) if len(alone) > 1 else None
    out = {
        "study": study,
        "point": point.label,
        "members": len(cfgs),
        "train_images": len(data.train_y),
        "epochs": args.check_epochs,
        "device": str(device),
        "max_abs_diff": worst,
        "seed_spread_test_loss_sd": spread,
        "times": times,
        "fused_over_alone_time": round(sum(t["fused_s"] for t in times) / sum(t["alone_s"] for t in times), 3),
    }
    print("check:", json.dumps(out), flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--runs",
        nargs="+",
        default=[
            "depth/alone=1:1",
            "depth/packed8=8:1",
            "depth/fused5=1:5",
            "depth/fused5x8=8:5",
            "kernel/alone=1:1",
            "kernel/fused5x8=8:5",
        ],
        help="STUDY/NAME=K:G: ablate run STUDY --per-gpu K --fuse G, in this order",
    )
    ap.add_argument("--data", help="CIFAR-10 directory or 'synthetic' for `ablate run --data`")
    ap.add_argument("--epochs", type=int, default=20, help="epochs per point")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--window", type=float, default=30.0, help="seconds each setup runs before it is stopped")
    ap.add_argument("--grace", type=float, default=15.0, help="seconds a stopped run gets to wind down")
    ap.add_argument("--repeat", type=int, default=1, help="run the setups this many times, alternated")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--check", type=int, default=0, help="members of the in-process fused-vs-alone check (0: none)")
    ap.add_argument("--check-images", type=int, default=2000)
    ap.add_argument("--check-epochs", type=int, default=2)
    ap.add_argument("--check-repeat", type=int, default=1, help="alone then fused, this many times")
    ap.add_argument("--budget", type=float, help="seconds in all: a setup that could end past this is skipped")
    ap.add_argument("--workdir", default="bench/out/fusion")
    ap.add_argument("--out", default="bench/out/fusion.json")
    args = ap.parse_args()
    began = time.time()
    runs = [parse_run(r) for r in args.runs]
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "runs": args.runs,
        "epochs": args.epochs,
        "seeds": args.seeds,
        "window_s": args.window,
        "device": args.device,
        "data": args.data,
        "sets": args.sets,
        "check": None,
        "results": [],
        "skipped": [],
    }

    def save() -> None:
        for r in report["results"]:
            base = [b for b in report["results"] if b["study"] == r["study"] and b["per_gpu"] == 1 and b["fuse"] == 1]
            for key in ("points_per_hour", "steady_points_per_hour"):
                rates = [b[key] for b in base if b.get(key)]
                if rates and r.get(key):
                    r[f"{key}_vs_alone"] = round(r[key] / statistics.fmean(rates), 2)
        steady = [r["steady_points_per_hour"] for r in report["results"] if r.get("steady_points_per_hour")]
        report["best_steady_points_per_hour"] = max(steady) if steady else None
        # Only at 20 epochs a point, and as if every toy point cost what depth's and kernel's do.
        report["toy_suite_minutes"] = round(TOY_RUNS / max(steady) * 60, 1) if steady and args.epochs == 20 else None
        write_json(out, report)

    save()
    if args.check:
        report["check"] = check(args)
        save()
    for round_ in range(args.repeat):
        for study, name, k, g in runs:
            if args.budget and time.time() - began + args.window + STOP_S > args.budget:
                report["skipped"].append(f"{study}-{name}-{round_}")
                print(f"{study} {name}: skipped, the budget of {args.budget:.0f} s would be exceeded", flush=True)
                save()
                continue
            report["results"].append(measure(study, name, k, g, args, workdir, round_))
            save()
    print(f"\n{'study':<8}{'setup':<10}{'K':>3}{'G':>3}{'pts/h':>9}{'steady':>9}{'x alone':>9}{'GPU %':>7}{'MiB':>8}")
    for r in report["results"]:
        cells = [r["points_per_hour"], r["steady_points_per_hour"]]
        text = "".join(f"{c:>9.0f}" if c is not None else f"{'-':>9}" for c in cells)
        ratio = r.get("steady_points_per_hour_vs_alone")
        util, mem = r["gpu_util_mean"], r["gpu_mem_max_mib"]
        print(
            f"{r['study']:<8}{r['setup']:<10}{r['per_gpu']:>3}{r['fuse']:>3}{text}{ratio if ratio is not None else '-':>9}"
            f"{util if util is not None else '-':>7}{mem if mem is not None else '-':>8}"
        )
    if report["toy_suite_minutes"]:
        print(
            f"the toy studies at 5 seeds and 20 epochs ({TOY_RUNS} runs) at the best steady rate: "
            f"{report['toy_suite_minutes']} min"
        )


if __name__ == "__main__":
    main()
