"""Makes results-v1.db, the frozen database of schema version 1 that test_migrations upgrades.

It must run against the code of schema version 1 (commit 755a4fc), not the current one:

    git worktree add /tmp/v1 755a4fc
    cd /tmp/v1 && PYTHONPATH=/tmp/v1 python /path/to/tests/assets/make_v1_db.py OUT.db

Do not regenerate it for a newer schema: add a results-vN.db beside it instead.
"""

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from ablate.run import run_study
from ablate.store import NewRun, Store

out = Path(sys.argv[1]).resolve()
out.unlink(missing_ok=True)
url = f"sqlite:///{out}"
run_study("smoke", db=url, device="cpu", epochs=1, sets=["train_subset=128"], data="synthetic")
store = Store.open(url)
complete = store.runs("smoke")[0]["id"]
store.put_artifact(complete, "kernels", bytes(range(8)), "uint8", [2, 4])
sid = store.sync_study(
    "legacy", "runs in every state", {"base": {}, "axes": {}, "seeds": 3, "figures": [], "path": None}
)
store.add_runs(sid, [NewRun("feedc0de", seed, {"epochs": 2, "seed": seed}, f"legacy seed={seed}") for seed in range(3)])
failed = store.claim(sid, "cpu", "old-host", 4242)
store.record_epoch(failed.run_id, 1, {"test_acc": 0.25, "train_loss": 2.0})
store.finish(
    failed.run_id,
    "failed",
    error="RuntimeError: boom (at train.py:1 in train)",
    versions={"torch": "2.x", "ablate": "0.1.0"},
)
running = store.claim(sid, "cpu", "old-host", 4242)
store.record_epoch(running.run_id, 1, {"test_acc": 0.5, "train_loss": float("nan")})
store.close()
with closing(sqlite3.connect(out)) as conn:  # one self-contained file: no -wal or -shm beside it
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("VACUUM")
print(out)
