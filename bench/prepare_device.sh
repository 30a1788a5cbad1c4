#!/usr/bin/env bash
# Gathers what the GPU machine lacks into git-ignored folders that `carry` can name:
#   .whl/      wheels for its Python 3.12 (it has torch, torchvision, typer, rich, pandas,
#              matplotlib, scipy and pyarrow, but not SQLAlchemy, Alembic, Mako or
#              pytorch-optimizer); one version of each, checked to install for cp312 there
#   .device/   the CIFAR-10 JPEG copy (18 MB) and its unpacking script;
#              airbench/airbench94.py and airbench94_muon.py (the record), airbench's public
#              code, for measurement only: it never enters the project's tracked files
#              (bench/bench_airbench.py imports it from here);
#              checkout.json: the commit and changed files this checkout was prepared from
# Run here, once, from any directory; then, on the device:
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".device"], timeout_s=540)
# Environment: SHARED (default ../shared, the CIFAR copy's parent), AIRBENCH_GIT (a git dir
# of github.com/KellerJordan/cifar10-airbench, default /work/.mirror/KellerJordan+cifar10-airbench/repo).
set -euo pipefail
cd "$(dirname "$0")/.."
# .whl/ and .device/ are in .gitignore (a worktree has no .git/info/ of its own).
mkdir -p .whl .device/airbench

# --- wheels: download into a fresh folder, then replace .whl, so exactly one version of each stays
platforms="--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64"
tags="--only-binary=:all: --python-version 3.12 --implementation cp $platforms"
fresh=$(mktemp -d)
if python3 -m pip download --quiet --no-deps $tags -d "$fresh" \
        "sqlalchemy>=2.0,<3" "alembic>=1.12" "mako" "pytorch-optimizer>=3.0" "typing-extensions>=4.12"; then
    rm -f .whl/*.whl
    mv "$fresh"/*.whl .whl/
else
    echo "pip download failed; keeping the wheels already in .whl/" >&2
fi
rm -rf "$fresh"
# They must install together for the device's Python (a second version of one would stop the install).
python3 -m pip install --dry-run --quiet --no-index --no-deps $tags --target /tmp/prepare-device-dry .whl/*.whl
ls .whl

# --- the CIFAR-10 JPEG copy
shared="${SHARED:-../shared}/datasets"
cp "$shared/cifar10-jpeg.npz" "$shared/cifar10_jpeg.py" .device/

# --- airbench94, unmodified (the file moved to legacy/ in the repository's history)
git_dir="${AIRBENCH_GIT:-/work/.mirror/KellerJordan+cifar10-airbench/repo}"
rm -f .device/airbench/airbench94.py
for path in airbench94.py legacy/airbench94.py; do
    if git --git-dir="$git_dir" show "HEAD:$path" > .device/airbench/airbench94.py.tmp 2>/dev/null; then
        mv .device/airbench/airbench94.py.tmp .device/airbench/airbench94.py
        git --git-dir="$git_dir" show HEAD:LICENSE > .device/airbench/LICENSE 2>/dev/null || true
        commit=$(git --git-dir="$git_dir" rev-parse HEAD)
        printf '{"repository": "github.com/KellerJordan/cifar10-airbench", "commit": "%s", "path": "%s", "sha256": "%s"}\n' \
            "$commit" "$path" "$(sha256sum .device/airbench/airbench94.py | cut -d' ' -f1)" > .device/airbench/SOURCE.json
        break
    fi
done
rm -f .device/airbench/airbench94.py.tmp
if [ -f .device/airbench/airbench94.py ]; then
    cat .device/airbench/SOURCE.json
else
    echo "warning: no airbench94.py in '$git_dir' (fetch github:KellerJordan/cifar10-airbench); gpu_check.sh will skip airbench" >&2
fi
# --- the record, airbench94_muon.py, unmodified, beside it (gpu_check.sh times it next to speedrun)
rm -f .device/airbench/airbench94_muon.py .device/airbench/SOURCE_muon.json
if git --git-dir="$git_dir" show HEAD:airbench94_muon.py > .device/airbench/airbench94_muon.py.tmp 2>/dev/null; then
    mv .device/airbench/airbench94_muon.py.tmp .device/airbench/airbench94_muon.py
    printf '{"repository": "github.com/KellerJordan/cifar10-airbench", "commit": "%s", "path": "airbench94_muon.py", "sha256": "%s"}\n' \
        "$(git --git-dir="$git_dir" rev-parse HEAD)" "$(sha256sum .device/airbench/airbench94_muon.py | cut -d' ' -f1)" \
        > .device/airbench/SOURCE_muon.json
    cat .device/airbench/SOURCE_muon.json
else
    rm -f .device/airbench/airbench94_muon.py.tmp
    echo "warning: no airbench94_muon.py in '$git_dir'; gpu_check.sh will skip the record" >&2
fi

# --- what this checkout is (the device copy has no .git)
python3 - <<'PY' > .device/checkout.json
import json, subprocess, datetime
def git(*args):
    try:
        return subprocess.run(["git", "--no-optional-locks", *args], capture_output=True, text=True, check=True).stdout.strip()
    except Exception:
        return None
print(json.dumps({"commit": git("rev-parse", "HEAD"),
                  "changed": (git("status", "--porcelain") or "").splitlines(),
                  "prepared_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}, indent=2))
PY

du -sh .whl .device
# What travels: tracked and untracked-not-ignored files, plus the two carried folders (limit 64 MiB).
echo "travels: $( (git ls-files -co --exclude-standard -z; find .whl .device -type f -print0) | du -ch --files0-from=- | tail -1 | cut -f1)"
