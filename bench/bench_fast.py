"""The 'train faster' recipe (``ablate run fast``: ResNet-9, one-cycle, 12 epochs) timed the
way airbench times itself, for a side-by-side with airbench94 on the same data.

The data is loaded once and put on the device; the configs come from ablate's own study
loader (``studies.load("fast")`` then ``expand``), so this trains exactly what ``ablate run
fast`` trains. One warm-up run (CUDA context, kernels, allocator: outside the clock), then
one run per seed through ``ablate.train.train`` with CUDA events around the call.

``seconds`` is the whole ``train()`` call: model build, 12 epochs, and ablate's evaluation
after every epoch (airbench's clock holds its training and its final evaluation only; its
per-epoch evaluations run off the clock). ``train_seconds`` is the sum of ablate's own
per-epoch training times, evaluations excluded. The JSON is rewritten after every run, so a
run cut short by a timeout still leaves the seeds that finished.

    python bench/bench_fast.py --data DIR [--seeds 5] [--set epochs=1] [--budget 90] [--out F]
        [--compile] [--profile-steps 20]   # then one run more, 20 of its steps profiled
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from pathlib import Path

import torch
from _record import over_budget, sd, write_json

from ablate.config import parse_assignment, to_dict
from ablate.data import Dataset, load, synthetic
from ablate.studies import expand
from ablate.studies import load as load_study
from ablate.train import Hooks, train

WARMUP_SEED = 1000  # not one of the timed seeds
PROFILE_SEED = 2000
PROFILE_SKIP = 10  # steps before the profiler records


def timed_train(cfg, data: Dataset, device: torch.device, compile: bool = False, after_step=None) -> dict:
    """One run through ``train``, timed; ``after_step()`` is called after every training step."""
    epochs: list[dict] = []
    stop = None if after_step is None else lambda: after_step() or False  # polled after every step
    hooks = Hooks(epoch=lambda e, m: epochs.append(dict(m, epoch=e)), should_stop=stop)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
    t0 = time.perf_counter()
    result = train(cfg, data, device, hooks, compile=compile)
    if cuda:
        end.record()
        torch.cuda.synchronize(device)
    host_s = time.perf_counter() - t0
    seconds = start.elapsed_time(end) / 1000 if cuda else host_s
    return {
        "seed": cfg.seed,
        "status": result.status,
        "epochs": result.epochs_done,
        "test_acc": result.metrics.get("test_acc"),
        "train_acc": result.metrics.get("train_acc"),
        "seconds": seconds,
        "host_seconds": host_s,
        "train_seconds": sum(m["epoch_time"] for m in epochs),
    }


def summarise(runs: list[dict]) -> dict:
    if not runs:
        return {"n": 0}
    accs = [r["test_acc"] for r in runs if r["test_acc"] is not None]
    secs = [r["seconds"] for r in runs]
    train_secs = [r["train_seconds"] for r in runs]
    return {
        "n": len(runs),
        "mean_acc": statistics.fmean(accs) if accs else None,
        "std_acc": sd(accs) if accs else None,
        "mean_seconds": statistics.fmean(secs),
        "std_seconds": sd(secs),
        "mean_train_seconds": statistics.fmean(train_secs),
    }


def profiled_run(cfg, data: Dataset, device: torch.device, compile: bool, steps: int, out: Path) -> dict:
    """One more run with the profiler on for ``steps`` training steps, after ``PROFILE_SKIP`` steps
    (the compile, cuDNN's autotuning and the allocator's first requests are behind them). Its table
    goes to ``out`` (text); the JSON keeps the top ops and the kernels launched per step."""
    from torch.profiler import ProfilerActivity, profile, schedule

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table: dict = {}

    def ready(prof) -> None:
        events = prof.key_averages()
        out.write_text(events.table(sort_by=sort, row_limit=40))
        device_time = lambda e: getattr(e, "self_device_time_total", getattr(e, "self_cuda_time_total", 0))  # noqa: E731
        kernels = [e for e in events if device_time(e) > 0]
        top = sorted(events, key=(device_time if device.type == "cuda" else lambda e: e.self_cpu_time_total))[::-1]
        table.update(
            steps=steps,
            kernels_per_step=sum(e.count for e in kernels) / steps if kernels else None,
            device_ms_per_step=sum(device_time(e) for e in kernels) / steps / 1000 if kernels else None,
            cpu_ms_per_step=sum(e.self_cpu_time_total for e in events) / steps / 1000,
            top=[
                {"op": e.key, "count": e.count, "self_device_us": device_time(e), "self_cpu_us": e.self_cpu_time_total}
                for e in top[:25]
            ],
            table=str(out),
        )

    with profile(
        activities=activities,
        schedule=schedule(wait=PROFILE_SKIP, warmup=2, active=steps, repeat=1),
        on_trace_ready=ready,
    ) as prof:
        run = timed_train(cfg, data, device, compile, after_step=prof.step)
    return (
        {"run": run, **table}
        if table
        else {"run": run, "missing": f"the run took fewer than {PROFILE_SKIP + 2 + steps} steps"}
    )


def fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="fast", help="study name or file (default: fast)")
    ap.add_argument("--data", default="synthetic", help="CIFAR-10 directory, or 'synthetic'")
    ap.add_argument("--seeds", type=int, default=5, help="timed runs: seeds 0..N-1")
    ap.add_argument("--warmup", type=int, default=1, help="untimed warm-up runs first")
    ap.add_argument("--warmup-epochs", type=int, help="epochs of a warm-up run (default: as the timed runs)")
    ap.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override as for `ablate run --set` (e.g. train_subset=2000, epochs=1)",
    )
    ap.add_argument("--test-subset", type=int, help="evaluate on N test images of a fixed draw only (quick CPU checks)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--budget", type=float, help="seconds: start no run that would end past this")
    ap.add_argument("--compile", action="store_true", help="torch.compile the step (ablate run --compile; CUDA only)")
    ap.add_argument("--profile-steps", type=int, default=0, help="then one run more, profiling N of its steps")
    ap.add_argument("--out", default="bench/out/fast.json")
    args = ap.parse_args()
    began = time.perf_counter()
    device = torch.device(args.device)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    overrides = [parse_assignment(s) for s in args.sets]
    study = load_study(args.study)
    if args.data == "synthetic":
        overrides.append(("data.dataset", "synthetic"))
    points = expand(study, overrides, seeds=args.seeds)

    t0 = time.perf_counter()
    data = synthetic() if args.data == "synthetic" else load(args.data)
    if args.test_subset:  # a fixed random draw: an image-folder tree lists the test set class by class
        keep = torch.randperm(len(data.test_y), generator=torch.Generator().manual_seed(0))[: args.test_subset]
        data = Dataset(data.train_x, data.train_y, data.test_x[keep], data.test_y[keep], data.classes)
    data = data.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    load_s = time.perf_counter() - t0

    report = {
        "study": study.name,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "data": args.data,
        "train_images": len(data.train_y),
        "test_images": len(data.test_y),
        "overrides": args.sets,
        "load_s": load_s,
        "config": to_dict(points[0].config),
        "compile": args.compile,
        "timing": "CUDA events around ablate.train.train (host clock on CPU)",
        "warmup": [],
        "runs": [],
        "stopped_by_budget": False,
    }
    write_json(out, report)
    print(f"data: {len(data.train_y)} train, {len(data.test_y)} test images on {device} ({load_s:.1f} s)")

    base = points[0].config
    try:
        for i in range(args.warmup):
            cfg = dataclasses.replace(base, seed=WARMUP_SEED + i)
            if args.warmup_epochs:
                cfg = dataclasses.replace(cfg, epochs=args.warmup_epochs)
            r = timed_train(cfg, data, device, args.compile)
            report["warmup"].append(r)
            write_json(out, report)
            print(f"warm-up  {r['epochs']:>3} ep  acc {fmt(r['test_acc'])}  {r['seconds']:.2f} s")

        print(f"{'seed':>4}  {'status':<9}{'test_acc':>9}{'seconds':>9}{'train_s':>9}")
        for p in points:
            done = report["runs"]
            if over_budget(began, args.budget, [r["host_seconds"] for r in done]):
                report["stopped_by_budget"] = True
                print(f"budget of {args.budget:.0f} s reached: {len(done)} of {len(points)} seeds run")
                write_json(out, report)
                break
            r = timed_train(p.config, data, device, args.compile)
            done.append(r)
            report.update(summarise(done))
            write_json(out, report)
            print(
                f"{r['seed']:>4}  {r['status']:<9}{fmt(r['test_acc']):>9}{r['seconds']:>9.2f}{r['train_seconds']:>9.2f}"
            )
    except KeyboardInterrupt:  # a caller's timeout: the seeds that finished are on record
        report["interrupted"] = True
        write_json(out, report)
        raise SystemExit(130) from None
    if args.profile_steps:
        cfg = dataclasses.replace(base, seed=PROFILE_SEED)
        report["profile"] = profiled_run(
            cfg, data, device, args.compile, args.profile_steps, out.with_name(out.stem + "_profile.txt")
        )
        write_json(out, report)
        print(f"profile of {args.profile_steps} steps: {out.with_name(out.stem + '_profile.txt')}")
    s = summarise(report["runs"])
    if s["n"]:
        print(
            f"{study.name}: {s['n']} seeds, acc {fmt(s['mean_acc'])} +- {fmt(s['std_acc'])}, "
            f"{s['mean_seconds']:.2f} s per run ({s['mean_train_seconds']:.2f} s training)"
        )


if __name__ == "__main__":
    main()
