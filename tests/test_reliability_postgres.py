"""The same protocol on a server database: several runners (threads, each with its own
connections) on one PostgreSQL database, through psycopg 3. ``pg_url`` (``conftest.py``)
is a fresh database on the server at ``ABLATE_TEST_POSTGRES_URL``; without one these
tests are skipped. The single-runner store tests run on PostgreSQL too, in
``test_store.py`` and ``test_migrations.py``."""

from __future__ import annotations

import json
import threading

from typer.testing import CliRunner

from ablate.cli import app
from ablate.store import NewRun, Store
from tests.conftest import race


def test_concurrent_first_opens_upgrade_once(pg_url):
    assert race(lambda i: Store.open(pg_url).close()) == []


def test_concurrent_claimers_take_each_run_exactly_once(pg_url):
    setup = Store.open(pg_url)
    sid = setup.sync_study("s", "", {})
    setup.add_runs(sid, [NewRun("h", seed, {"seed": seed}, f"seed={seed}") for seed in range(60)])
    setup.close()
    claimed: list[int] = []
    lock = threading.Lock()

    def claimer(i: int):
        store = Store.open(pg_url)
        while (claim := store.claim(sid, "cpu", "host", 1000 + i)) is not None:
            assert store.heartbeat(claim.run_id, claim.token)
            assert store.record_epoch(claim.run_id, 1, {"test_acc": 0.5}, claim.token)
            assert store.finish(claim.run_id, "complete", {"test_acc": 0.5}, token=claim.token)
            with lock:
                claimed.append(claim.run_id)
        store.close()

    assert race(claimer) == []
    assert sorted(claimed) == list(range(1, 61))
    store = Store.open(pg_url)
    assert {(r["status"], r["attempts"]) for r in store.runs("s")} == {("complete", 1)}
    store.close()


def test_concurrent_add_runs_of_one_study(pg_url):
    Store.open(pg_url).close()

    def add(i):
        store = Store.open(pg_url)
        sid = store.sync_study("s", "", {})
        store.add_runs(sid, [NewRun("h", seed, {}, "x") for seed in range(20)])
        store.close()

    errors = race(add)
    store = Store.open(pg_url)
    assert errors == [] and len(store.runs("s")) == 20
    store.close()


def test_the_smoke_study_end_to_end(pg_url, tmp_path):
    """run, status, report and export through the CLI, with the URL as ``--db``."""
    result = CliRunner().invoke(
        app,
        [
            "run",
            "smoke",
            "--db",
            pg_url,
            "--device",
            "cpu",
            "--epochs",
            "2",
            "--set",
            "train_subset=128",
            "--set",
            "model.width=8",
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    status = json.loads(CliRunner().invoke(app, ["status", "--db", pg_url, "--json"]).output)
    (study,) = status["studies"]
    assert study["counts"]["complete"] == 4
    assert not any((tmp_path / "checkpoints").rglob("*.pt"))  # checkpoints under ./checkpoints/NAME/, removed
    result = CliRunner().invoke(app, ["report", "--db", pg_url, "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
    assert any((tmp_path / "r").iterdir())

    def export(*extra: str) -> int:
        out = tmp_path / "x.csv"
        result = CliRunner().invoke(app, ["export", "smoke", "--db", pg_url, "--out", str(out), *extra])
        assert result.exit_code == 0, result.output
        return len(out.read_text().splitlines()) - 1  # rows under the header

    assert export() == 4
    assert export("--metrics") >= 4 * 2  # every run, every epoch, one row per metric
