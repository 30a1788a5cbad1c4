"""Points per hour against K, the points trained at once on one GPU (``ablate run --per-gpu K``).

For each K, ``ablate run STUDY --per-gpu K --fuse 1`` (packing alone; bench_fusion.py
measures fusion) runs on the full training set with reduced
epochs, into a database of its own, for a fixed window of wall-clock time; then it is
stopped the way a user stops it (SIGINT: the workers stop after their current step and
the unfinished points go back to pending). The grid has more points than the window can
train (``--seeds`` is K times ``--seeds-per-k``), so every K is measured at full load.

The work done is read back from the database: finished points, and epochs trained by all
runs (finished or not), so a point cut off halfway counts for its epochs. Three rates:

- ``points_per_hour``: point-equivalents (epochs / epochs per point) over the whole window,
  from launch to the stop: start-up (imports, data load, K processes) included;
- ``busy_points_per_hour``: the same work over the window from the first claimed point;
- ``steady_points_per_hour``: K / mean wall time of a finished point: the rate once running.

GPU utilisation and memory are sampled every 500 ms with ``nvidia-smi`` in the background
(where it exists) and summarised over the busy window.

    python bench/bench_packing.py --data DIR [--ks 1 2 4 8] [--epochs 3] [--window 30] [--out F]
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from _record import write_json

SMI = ["nvidia-smi", "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits", "-lms", "500"]


def stop(proc: subprocess.Popen, grace: float) -> bool:
    """Stop a runner as Ctrl-C would (after its current step, its points back to pending), and
    kill it after ``grace`` seconds; whether it had already finished on its own."""
    if proc.poll() is not None:
        return True
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        proc.kill()  # its workers see their parent gone and exit
        proc.wait()
    return False


class Sampler:
    """nvidia-smi in the background; each line stamped with the host time it arrived."""

    def __init__(self, log: Path):
        self.samples: list[tuple[float, float, float]] = []  # (time, util %, memory MiB)
        self.proc = None
        if shutil.which("nvidia-smi") is None:
            return
        self.log = open(log, "w")
        self.proc = subprocess.Popen(SMI, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            now = time.time()
            self.log.write(f"{now:.3f}, {line}")
            try:
                util, mem = (float(v) for v in line.strip().split(",")[:2])
            except ValueError:
                continue
            self.samples.append((now, util, mem))

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.thread.join(timeout=5)
        self.log.close()

    def summary(self, t0: float, t1: float) -> dict:
        inside = [s for s in self.samples if t0 <= s[0] <= t1]
        if not inside:
            return {"gpu_util_mean": None, "gpu_util_max": None, "gpu_mem_max_mib": None, "gpu_samples": 0}
        return {
            "gpu_util_mean": round(statistics.fmean(s[1] for s in inside), 1),
            "gpu_util_max": max(s[1] for s in inside),
            "gpu_mem_max_mib": max(s[2] for s in inside),
            "gpu_samples": len(inside),
        }


def query(db: Path, sql: str, args=()):
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1.0)
    try:
        return con.execute(sql, args).fetchall()
    finally:
        con.close()


def utc_seconds(text: str | None) -> float | None:
    if not text:
        return None
    return datetime.fromisoformat(str(text)).replace(tzinfo=timezone.utc).timestamp()


def measure(k: int, args, workdir: Path) -> dict:
    db = workdir / f"pack-{k}.db"
    for p in workdir.glob(f"pack-{k}.db*"):
        p.unlink()
    seeds = k * args.seeds_per_k
    cmd = [
        sys.executable,
        "-m",
        "ablate",
        "run",
        args.study,
        "--per-gpu",
        str(k),
        "--fuse",
        "1",
        "--seeds",
        str(seeds),
        "--epochs",
        str(args.epochs),
        "--device",
        args.device,
        "--db",
        f"sqlite:///{db}",
        "--checkpoints",
        str(workdir / f"pack-{k}-checkpoints"),
    ]
    if args.data:
        cmd += ["--data", args.data]
    for s in args.sets:
        cmd += ["--set", s]
    print(f"\n--- K={k}: {' '.join(cmd)}", flush=True)
    sampler = Sampler(workdir / f"pack-{k}-gpu.csv")
    log = open(workdir / f"pack-{k}.log", "w")
    launched = time.time()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    first_claim = all_claimed = None
    while proc.poll() is None and time.time() - launched < args.window:
        if all_claimed is None and db.exists():
            try:
                running = query(
                    db, "SELECT count(*) FROM runs WHERE status IN ('running', 'complete', 'diverged', 'failed')"
                )[0][0]
            except sqlite3.Error:
                running = 0
            if running and first_claim is None:
                first_claim = time.time()
            if running >= k:
                all_claimed = time.time()
        time.sleep(0.2)
    stopped = time.time()
    finished_early = stop(proc, args.grace)
    ended = time.time()
    sampler.stop()
    log.close()

    runs = query(db, "SELECT status, wall_s, started_at, ended_at FROM runs") if db.exists() else []
    epochs = query(db, "SELECT count(*) FROM metrics WHERE name = 'epoch_time'")[0][0] if db.exists() else 0
    complete = [r for r in runs if r[0] in ("complete", "diverged")]
    walls = [r[1] for r in complete if r[1]]
    point_eq = epochs / args.epochs
    wall = stopped - launched
    busy_from = first_claim or launched
    busy = stopped - busy_from
    result = {
        "k": k,
        "rc": proc.returncode,
        "finished_before_window": finished_early,
        "points_in_grid": len(runs),
        "points_complete": len(complete),
        "points_failed": sum(r[0] == "failed" for r in runs),
        "epochs_trained": epochs,
        "point_equivalents": round(point_eq, 3),
        "window_s": round(wall, 2),
        "busy_s": round(busy, 2),
        "startup_s": round(busy_from - launched, 2) if first_claim else None,
        "all_claimed_after_s": round(all_claimed - launched, 2) if all_claimed else None,
        "stop_s": round(ended - stopped, 2),
        "points_per_hour": round(point_eq / wall * 3600, 1) if wall > 0 else None,
        "busy_points_per_hour": round(point_eq / busy * 3600, 1) if busy > 0 else None,
        "mean_point_wall_s": round(statistics.fmean(walls), 2) if walls else None,
        "steady_points_per_hour": round(k / statistics.fmean(walls) * 3600, 1) if walls else None,
        **sampler.summary(busy_from, stopped),
        "command": cmd,
    }
    print(json.dumps({k_: v for k_, v in result.items() if k_ != "command"}), flush=True)
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--study", default="depth")
    ap.add_argument("--data", help="CIFAR-10 directory for `ablate run --data` (default: its own default)")
    ap.add_argument("--ks", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--epochs", type=int, default=3, help="epochs per point (reduced from the study's)")
    ap.add_argument("--seeds-per-k", type=int, default=4, help="the grid holds K times this many seeds of each point")
    ap.add_argument("--window", type=float, default=30.0, help="seconds each K runs before it is stopped")
    ap.add_argument("--grace", type=float, default=15.0, help="seconds a stopped run gets to wind down")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--budget", type=float, help="seconds in all: a K that could end past this is skipped")
    ap.add_argument("--workdir", default="bench/out/packing")
    ap.add_argument("--out", default="bench/out/packing.json")
    args = ap.parse_args()
    began = time.time()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    report = {
        "study": args.study,
        "epochs": args.epochs,
        "window_s": args.window,
        "device": args.device,
        "sets": args.sets,
        "results": [],
        "skipped": [],
    }

    def save() -> None:
        base = next((r for r in report["results"] if r["k"] == 1), None)
        for r in report["results"]:
            for key in ("points_per_hour", "busy_points_per_hour", "steady_points_per_hour"):
                if base and base.get(key) and r.get(key):
                    r[f"{key}_vs_k1"] = round(r[key] / base[key], 2)
        write_json(out, report)

    save()
    for k in args.ks:
        # A stop takes a few seconds; the grace is for the worst case, which the caller's timeout covers.
        if args.budget and time.time() - began + args.window + 5 > args.budget:
            report["skipped"].append(k)
            print(f"K={k}: skipped, the budget of {args.budget:.0f} s would be exceeded", flush=True)
            save()
            continue
        report["results"].append(measure(k, args, workdir))
        save()
    print(f"\n{'K':>3}{'pts/h':>10}{'busy pts/h':>12}{'steady pts/h':>14}{'x K=1':>7}{'GPU %':>7}{'MiB':>8}")
    for r in report["results"]:
        cells = [r["points_per_hour"], r["busy_points_per_hour"], r["steady_points_per_hour"]]
        text = "".join(f"{c:>{w}.0f}" if c is not None else f"{'-':>{w}}" for c, w in zip(cells, (10, 12, 14)))
        ratio = r.get("points_per_hour_vs_k1")
        util, mem = r["gpu_util_mean"], r["gpu_mem_max_mib"]
        print(
            f"{r['k']:>3}{text}{ratio if ratio is not None else '-':>7}"
            f"{util if util is not None else '-':>7}{mem if mem is not None else '-':>8}"
        )


if __name__ == "__main__":
    main()
