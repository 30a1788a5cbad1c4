"""The repository's results.db and reports/: a fresh clone's `ablate report` redraws every
committed file byte for byte, and the README's Claims table says what the report says."""

import re
from pathlib import Path

from ablate.report import write_report
from ablate.store import Store

ROOT = Path(__file__).parent.parent
COMMITTED = ROOT / "reports"


def test_the_committed_reports_are_what_the_committed_database_draws(tmp_path, monkeypatch):
    assert (ROOT / "results.db").stat().st_size < 20 * 2**20  # small enough to commit
    monkeypatch.chdir(ROOT)  # `ablate report` as run there: the default database, its URL in the README
    store = Store.open(None, create=False)
    try:
        write_report(store, tmp_path / "reports")
    finally:
        store.close()
    drawn = {p.name: p.read_bytes() for p in (tmp_path / "reports").iterdir()}
    committed = {p.name: p.read_bytes() for p in COMMITTED.iterdir()}
    assert sorted(drawn) == sorted(committed)
    assert [name for name in sorted(drawn) if drawn[name] != committed[name]] == []


def test_the_readme_claims_table_is_the_reports():
    """Each row of the README's Claims table (the report's words, study, verdict, evidence)
    is the report's: the README cannot drift from the database."""
    report = (COMMITTED / "README.md").read_text()
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| ([\d.]+) \| (.+?) \| `(\w+)` \| \*\*([a-z ]+)\*\* \| (.+?) \|$", readme, re.M)
    found = {
        (s, text, study): (verdict, evidence)
        for s, text, study, verdict, evidence in re.findall(
            r"^\| ([\d.]+) \| (.+?) \| `(\w+)` \| .+? \| \*\*([a-z ]+)\*\*.*? \| (.+?) \|$", report, re.M
        )
    }
    assert len(rows) >= 20
    assert [r for r in rows if found.get(r[:3]) != r[3:]] == []
