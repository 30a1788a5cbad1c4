"""How often a claim is decided when it should not be: every value of the axis truly equal.

Simulates FAMILIES studies of one axis with k + 1 values and SEEDS seeds, every value drawn
from the same distribution (a per-seed effect shared by all values, plus noise), and checks
``best``, ``worst`` and ``not_best`` claims on them through ``ablate.claims.evaluate``, the
path the report takes. Any supported or contradicted verdict is a false one. Prints the rate
per check and k with its Monte Carlo standard error, and writes bench/out/verdicts.json.

The same script runs against an older checkout (``PYTHONPATH=OLD python bench/bench_verdicts.py``):
``evaluate`` has kept its signature, so before and after are measured alike.

    python bench/bench_verdicts.py [--families 500] [--seeds 3] [--k 3 4 7]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd

from ablate import claims

OUT = Path(__file__).resolve().parent / "out" / "verdicts.json"
AXIS = "model.depth"


def family(rng: np.random.Generator, k: int, seeds: int) -> pd.DataFrame:
    seed_effect = rng.normal(0, 0.01, seeds)
    rows = []
    for value in range(k + 1):
        for seed in range(seeds):
            acc = 0.6 + seed_effect[seed] + rng.normal(0, 0.005)
            rows.append(
                {
                    "run_id": len(rows) + 1,
                    "status": "complete",
                    "seed": seed,
                    AXIS: value,
                    "test_acc": acc,
                    "config_hash": f"{value}",
                }
            )
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--families", type=int, default=500)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--k", type=int, nargs="+", default=[3, 4, 7])
    args = ap.parse_args()
    results = []
    for k in args.k:
        axes = {AXIS: list(range(k + 1))}
        checks = {
            c: claims.parse({"text": c, "check": c, "axis": AXIS, "value": 0}, axes)
            for c in ("best", "worst", "not_best")
        }
        rng = np.random.default_rng(k)
        false = {c: 0 for c in checks}
        t0 = time.perf_counter()
        for _ in range(args.families):
            frame = family(rng, k, args.seeds)
            for name, claim in checks.items():
                false[name] += claims.evaluate(claim, frame, axes, "sim").verdict in ("supported", "contradicted")
        for name, count in false.items():
            rate = count / args.families
            se = math.sqrt(max(rate * (1 - rate), 1e-12) / args.families)
            results.append(
                {"k": k, "check": name, "families": args.families, "seeds": args.seeds, "false_rate": rate, "se": se}
            )
            print(f"k = {k}  {name:9s} false verdicts {100 * rate:5.1f}% (+- {100 * se:.1f})")
        print(f"  ({time.perf_counter() - t0:.0f} s)")
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
