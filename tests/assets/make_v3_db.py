"""Makes results-v3.db, the frozen database of schema version 3 that test_migrations upgrades.

It must run against the code of schema version 3 (commit 3241bdf), not the current one:

    mkdir /tmp/v3 && git archive 3241bdf | tar -x -C /tmp/v3
    cd /tmp/v3 && PYTHONPATH=/tmp/v3 python /path/to/tests/assets/make_v3_db.py OUT.db

It holds what version 3 could hold, built as make_v2_db builds version 2's: the smoke study run twice with different epochs (two
variants, each run with its data fingerprint and no code version), a study of runs in
every state with claims, notes and a kernel artifact. Do not regenerate it for a newer
schema: add a results-vN.db beside it instead.
"""

import sys
from pathlib import Path

from make_v2_db import build  # beside this file: the script's folder is on the path

if __name__ == "__main__":
    build(Path(sys.argv[1]).resolve(), "v3")
    print(Path(sys.argv[1]).resolve())
