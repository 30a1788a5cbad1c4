"""``--per-gpu K``: several points trained at once on one device, each in its own process.

On a CPU the same code path runs (K processes sharing the CPU), so the tests can check
what matters: every point's numbers equal those of the point trained alone."""

from __future__ import annotations

from ablate import results
from ablate.run import plan, run_study
from ablate.scheduler import QuietReporter

TIMINGS = ["epoch_time", "images_per_s"]


def _curves(db: str):
    m = results.metrics(db=db, study="smoke")
    m = m[~m["name"].isin(TIMINGS)]
    return m.sort_values(["label", "step", "name"])[["label", "step", "name", "value"]].reset_index(drop=True)


def test_per_gpu_gives_each_device_k_worker_slots():
    assert plan("smoke", device="cpu", per_gpu=3).devices == ["cpu", "cpu", "cpu"]
    assert plan("smoke", device="cpu").devices == ["cpu"]


def test_points_packed_two_to_a_device_match_points_trained_alone(tmp_path):
    packed, alone = f"sqlite:///{tmp_path / 'packed.db'}", f"sqlite:///{tmp_path / 'alone.db'}"
    said: list[str] = []
    summary = run_study(
        "smoke",
        db=packed,
        reporter=QuietReporter(said.append),
        device="cpu",
        per_gpu=2,
        sets=["model.width=8"],
        epochs=1,
    )
    assert summary.ok and summary.counts == {"complete": 4}
    assert said[0].startswith("4 points to train on cpu, cpu;")
    run_study("smoke", db=alone, reporter=QuietReporter(lambda _: None), device="cpu", sets=["model.width=8"], epochs=1)
    assert _curves(packed).equals(_curves(alone))
