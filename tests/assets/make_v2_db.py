"""Makes results-v2.db, the frozen database of schema version 2 that test_migrations upgrades.

It must run against the code of schema version 2 (commit e5632af), not the current one:

    git worktree add /tmp/v2 e5632af
    cd /tmp/v2 && PYTHONPATH=/tmp/v2 python /path/to/tests/assets/make_v2_db.py OUT.db

It holds what version 2 could hold: the smoke study run twice with different epochs (two
variants mixed under one study, the pooling that schema 3 takes apart), a study of runs in
every state with claims, notes and a kernel artifact. Do not regenerate it for a newer
schema: add a results-vN.db beside it instead.
"""

import sqlite3
import sys
from contextlib import closing
from pathlib import Path

from ablate.run import run_study
from ablate.store import NewRun, Store


def build(out: Path, tag: str) -> None:
    """The frozen database at ``out``, made by the ablate on the path; ``make_v3_db`` makes
    schema 3's the same way (its checkpoints under ``TAG-checkpoints`` beside it)."""
    out.unlink(missing_ok=True)
    url = f"sqlite:///{out}"
    for epochs in (1, 2):
        run_study(
            "smoke",
            db=url,
            device="cpu",
            epochs=epochs,
            sets=["train_subset=128"],
            data="synthetic",
            checkpoints=str(out.parent / f"{tag}-checkpoints"),
        )
    store = Store.open(url)
    complete = store.runs("smoke")[0]["id"]
    store.put_artifact(complete, "kernels.conv1", bytes(range(8)), "uint8", [2, 4])
    sid = store.sync_study(
        "legacy", "runs in every state", {"base": {}, "axes": {}, "seeds": 3, "figures": [], "path": None}
    )
    store.add_runs(
        sid, [NewRun("feedc0de", seed, {"epochs": 2, "seed": seed}, f"legacy seed={seed}") for seed in range(3)]
    )
    failed = store.claim(sid, "cpu", "old-host", 4242)
    store.record_epoch(failed.run_id, 1, {"test_acc": 0.25, "train_loss": 2.0}, token=failed.token)
    store.add_note(failed.run_id, "attempt 1 re-queued: its process is gone", token=failed.token)
    store.finish(
        failed.run_id,
        "failed",
        error="RuntimeError: boom (at train.py:1 in train)",
        versions={"torch": "2.x", "ablate": "0.1.0"},
        token=failed.token,
    )
    running = store.claim(sid, "cpu", "old-host", 4242)
    store.record_epoch(running.run_id, 1, {"test_acc": 0.5, "train_loss": float("nan")}, token=running.token)
    store.close()
    with closing(sqlite3.connect(out)) as conn:  # one self-contained file: no -wal or -shm beside it
        conn.execute("PRAGMA journal_mode=DELETE")
        conn.execute("VACUUM")


if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve(), "v2")
    print(Path(sys.argv[1]).resolve())
