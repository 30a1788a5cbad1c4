"""What a claim and a heartbeat cost when several runners share one SQLite database.

N runner processes (default 2) start together on one database of pending runs and loop
as runners do, only faster: claim a run, beat ``--beats`` times, record ``--epochs``
epochs, finish it; until none is left. Each process times every store call; the script
prints the median, 95th percentile and maximum per call in milliseconds, checks that
every run was claimed exactly once, and writes bench/out/claims.json.

A real worker beats every 10 s and records an epoch every few seconds or minutes, so
these loops are thousands of times busier than a study: the contention is the worst case.

    python bench/bench_claims.py [--runners 2] [--runs 300] [--beats 5] [--epochs 2] [--db PATH]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import tempfile
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "claims.json"
CALLS = ("claim", "heartbeat", "record_epoch", "finish")


def runner(url: str, study_id: int, beats: int, epochs: int, start_at: float, out) -> None:
    from ablate.store import Store

    store = Store.open(url)
    times: dict[str, list[float]] = {c: [] for c in CALLS}

    def timed(name, fn, *args, **kwargs):
        t0 = time.perf_counter()
        value = fn(*args, **kwargs)
        times[name].append((time.perf_counter() - t0) * 1000)
        return value

    claimed = []
    time.sleep(max(0.0, start_at - time.time()))
    while True:
        claim = timed("claim", store.claim, study_id, "cpu", "bench", os.getpid())
        if claim is None:
            break
        claimed.append(claim.run_id)
        for _ in range(beats):
            assert timed("heartbeat", store.heartbeat, claim.run_id, claim.token)
        for epoch in range(1, epochs + 1):
            metrics = {"train_loss": 1.0 / epoch, "test_acc": 0.1 * epoch, "lr": 0.05, "epoch_time": 1.0}
            assert timed("record_epoch", store.record_epoch, claim.run_id, epoch, metrics, claim.token)
        assert timed("finish", store.finish, claim.run_id, "complete", {"test_acc": 0.5}, 1.0, token=claim.token)
    out.put({"pid": os.getpid(), "claimed": claimed, "times": times, "busy_retries": store.busy_retries})
    store.close()


def _stats(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 3),
        "p95_ms": round(values[int(0.95 * (len(values) - 1))], 3),
        "max_ms": round(values[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runners", type=int, default=2)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--beats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--db", help="a database file to use (default: a new one in a temporary directory)")
    args = parser.parse_args()

    from ablate.store import NewRun, Store

    path = Path(args.db) if args.db else Path(tempfile.mkdtemp(prefix="ablate-bench-")) / "claims.db"
    url = f"sqlite:///{path}"
    store = Store.open(url)
    study_id = store.sync_study("bench", "claims under contention", {})
    store.add_runs(study_id, [NewRun("bench", seed, {"seed": seed}, f"seed={seed}") for seed in range(args.runs)])
    store.close()

    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    start_at = time.time() + 3.0  # every process imported and connected before the first claim
    procs = [
        ctx.Process(target=runner, args=(url, study_id, args.beats, args.epochs, start_at, out))
        for _ in range(args.runners)
    ]
    for p in procs:
        p.start()
    results = [out.get(timeout=600) for _ in procs]
    for p in procs:
        p.join()
    wall = time.time() - start_at

    claimed = [run_id for r in results for run_id in r["claimed"]]
    assert sorted(claimed) == list(range(1, args.runs + 1)), "a run was claimed twice or not at all"
    summary = {
        "runners": args.runners,
        "runs": args.runs,
        "beats_per_run": args.beats,
        "epochs_per_run": args.epochs,
        "wall_s": round(wall, 2),
        "claims_per_runner": [len(r["claimed"]) for r in results],
        "busy_retries": sum(r["busy_retries"] for r in results),
        "calls": {c: _stats([t for r in results for t in r["times"][c]]) for c in CALLS},
    }
    print(
        f"{args.runners} runners, {args.runs} runs on one SQLite database, {wall:.1f} s; "
        f"claims per runner {summary['claims_per_runner']}; every run claimed exactly once; "
        f"busy retries {summary['busy_retries']}"
    )
    print(f"{'call':>14} {'n':>6} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for name, s in summary["calls"].items():
        print(f"{name:>14} {s['n']:>6} {s['median_ms']:>10.2f} {s['p95_ms']:>8.2f} {s['max_ms']:>8.2f}")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    main()
