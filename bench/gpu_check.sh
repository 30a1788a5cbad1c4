#!/usr/bin/env bash
# Every GPU check of the project in one go, for one call on the device machine:
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".device"], timeout_s=540)
# after `bash bench/prepare_device.sh` here. Writes gpu_check.log, summary.json and
# results.tgz (database, report, benchmark JSON) into $OUT, else bench/out/gpu/.
# Try it on the CPU first: DEVICE=cpu QUICK=1 bash bench/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-bench/out/gpu}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"   # 1: tiny settings, to check the script itself on a CPU
mkdir -p "$OUT"
work=$(mktemp -d)
log="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1
exec > >(tee "$log") 2>&1

step() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }
timed() {  # name, command...: runs it, records its exit code and seconds in summary lines
    local name=$1; shift
    local t0=$(date +%s%N)
    "$@"; local rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    printf '{"step": "%s", "rc": %d, "seconds": %d.%03d}\n' "$name" "$rc" $((ms / 1000)) $((ms % 1000)) >> "$work/steps.jsonl"
}

step "environment"
if [ -d .whl ] && ! python3 -c "import sqlalchemy, alembic, pytorch_optimizer" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="/tmp/site:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}"   # the checkout itself, uninstalled
ablate() { python3 -m ablate "$@"; }
python3 -c "import torch, sys; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

step "data"
data="$work/cifar"
if [ -f .device/cifar10-jpeg.npz ]; then
    (cd .device && python3 cifar10_jpeg.py folder "$data") || exit 1
else
    data=synthetic
fi
subset=$([ "$QUICK" = 1 ] && echo 2000 || echo 50000)
seeds=$([ "$QUICK" = 1 ] && echo 1 || echo 3)
db="sqlite:///$work/gpu.db"

step "tests"
timed pytest timeout 180 python3 -m pytest -q -x -p no:cacheprovider

step "smoke study on $DEVICE"
timed smoke ablate run smoke --device "$DEVICE" --db "$db"

step "trainer against a bare loop, and batch augmentation against a DataLoader"
timed bench_trainer python3 bench/bench_trainer.py --data "$data" --n "$subset" --repeats 3 --device "$DEVICE" --out "$work/trainer.json"
timed bench_augment python3 bench/bench_augment.py --data "$data" --n "$subset" --repeats 3 --workers 0 8 --device "$DEVICE"
cp bench/out/augment.json "$work/augment.json" 2>/dev/null

step "fast recipe: ResNet-9, one-cycle, 12 epochs, $seeds seeds"
epochs=$([ "$QUICK" = 1 ] && echo 1 || echo 12)
timed fast ablate run fast --data "$data" --seeds "$seeds" --epochs "$epochs" --set train_subset="$subset" --device "$DEVICE" --db "$db"

step "status and report"
ablate status --db "$db" --json > "$work/status.json"
ablate report --db "$db" --out "$work/report"
python3 - "$work" <<'PY' > "$OUT/summary.json"
import json, sys, pathlib
work = pathlib.Path(sys.argv[1])
steps = [json.loads(l) for l in (work / "steps.jsonl").read_text().splitlines()]
status = json.loads((work / "status.json").read_text())
runs = {s["name"]: [{k: r[k] for k in ("status", "seed", "test_acc", "wall_s", "device")} for r in s["runs"]]
        for s in status["studies"]}
bench = {p.stem: json.loads(p.read_text()) for p in work.glob("*.json") if p.stem in ("trainer", "augment")}
print(json.dumps({"steps": steps, "runs": runs, "bench": bench}, indent=2))
PY
tar -czf "$OUT/results.tgz" -C "$work" gpu.db report status.json $(cd "$work" && ls trainer.json augment.json 2>/dev/null)
cat "$OUT/summary.json"
