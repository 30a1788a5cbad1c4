#!/usr/bin/env bash
# The GPU checks in one go, for ONE call on the device machine. PART picks which:
#   PART=fusion (default)  issue 11: fused training against one at a time and packing (depth and
#                          kernel studies, 20 epochs, 5 seeds, full training set), 2 epochs of each
#                          long recipe, and the speedrun recipe plain and compiled beside airbench94
#                          and the record, airbench94_muon
#   PART=baseline          issue 5 (measured on 2026-11-30, ../shared/gpu-runs/): fast and speedrun
#                          against airbench94, --per-gpu packing, the figure suite
#   PART=speedrun          issue 22: the record, airbench94_muon (unmodified; 10 runs after its
#                          compile warm-up), beside ablate's speedrun eager and --compile (10 seeds
#                          each after a full-length warm-up run), and a profile of 20 compiled steps
#   PART=suite             issue 13: the whole time left to `ablate run all` (3 seeds, 4 epochs,
#                          --per-gpu 8; SUITE_SEEDS, SUITE_EPOCHS, SUITE_PER_GPU change them), going on
#                          from the repository's results.db; then `ablate merge` its results.db here
# Either way:
#   bash bench/prepare_device.sh        # here, first: wheels into .whl/, data + airbench into .device/
#   run(command="bash bench/gpu_check.sh", carry=[".whl", ".device"], timeout_s=540)
# Writes into $OUT (else bench/out/gpu/), four files in all:
#   gpu_check.log   everything printed
#   summary.json    date, device, versions, exact commands, each step's rc and seconds, and the
#                   results: tests, fast/speedrun vs airbench94, packing, fusion, the long recipes,
#                   the figure suite (bench/RESULTS.md is written from it)
#   results.tgz     results.db + reports/ of the figure suite (baseline, suite): `ablate merge` its
#                   results.db into the repository's, then `ablate report`
#   bench.tgz       every benchmark JSON, log, nvidia-smi trace and per-study log
# Try it on the CPU first (tiny settings, airbench skipped for want of CUDA):
#   bash bench/prepare_device.sh && DEVICE=cpu QUICK=1 OUT=/tmp/gpucheck bash bench/gpu_check.sh
#
# Time budget. The call is allowed 540 s; this script ends itself by DEADLINE=520 s after it
# starts, whatever happens: every step runs under its own `timeout` (SIGINT, then KILL 10 s
# later), capped by the time left minus RESERVE (35 s kept for status, report, summary and
# tarballs) minus those 10 s, and a step that would get less than 20 s is skipped. A failing
# step records its rc and the script goes on; what finished lands in summary.json and the tarballs.
# PART=fusion, most valuable first (on an H200; the fusion, compile and record-compile numbers are
# guesses, none ran yet):
#   step          cap     expected
#   environment   (none)    ~8 s
#   data         90+60 s   ~10 s
#   tests           45 s   ~30 s  pytest tests/test_augment.py test_train.py test_fusion.py
#   fusion         170 s  ~165 s  bench_fusion.py: a fused-vs-alone check on the device (5 seeds,
#                                 5,000 images, 2 epochs), then windows of 20 s: depth alone, fused 5,
#                                 packed 8, fused 5 x packed 8; kernel alone, fused 5 x packed 8,
#                                 packed 8, fused 5; depth fused 2 (what the budget leaves)
#   recipes         70 s   ~60 s  bench_recipes.py: 2 epochs of best, ranger, densenet (what 50 s allow)
#   airbench        35 s   ~18 s  1 warm-up + 3 runs
#   speedrun        40 s   ~15 s  1 warm-up (2 epochs) + 3 seeds
#   airbench_muon  120 s   ~90 s? the record, airbench94_muon.py: 1 warm-up (its max-autotune
#                                 compile: the guess) + 3 runs of about 1.3 s (2026-11-30, H200)
#   compiled        55 s   ~45 s  the same with --compile (torch.compile, CUDA graphs)
#   finish          35 s   ~10 s  summary.json, tarballs
# PART=speedrun (on an H200; the record's 1.29 s and ablate's legacy speedrun's 2.51 s per run are
# 2026-11-30's; the compile times are guesses):
#   step          cap     expected
#   environment   (none)    ~8 s
#   data         90+60 s   ~10 s
#   tests           45 s   ~30 s  pytest tests/test_augment.py test_speedrun.py test_record_parity.py test_compile.py
#                                 (the prepared set on CUDA in bf16, bitwise the per-batch path)
#   speedrun        90 s   ~30 s  ablate's speedrun eager: 1 full-length warm-up + 10 seeds
#   airbench_muon  150 s  ~110 s? the record: 1 warm-up (its max-autotune compile) + 10 runs
#   compiled       150 s   ~90 s? speedrun --compile: 1 full-length warm-up (the compile) + 10 seeds,
#                                 then one run more with 20 of its steps profiled
#   finish          35 s   ~10 s  summary.json (its "speedrun" part: mean and std of accuracy and
#                                 seconds for each side, and the ratios), tarballs
# PART=baseline:
#   step          cap     expected on an H100
#   environment   (none)    ~8 s  wheels into /tmp/site, versions, nvidia-smi
#   data         90+60 s   ~20 s  unpack the JPEG copy, decode it once (ablate's cache), write
#                                 airbench's cifar10/train.pt and test.pt from the same tensors
#   tests           60 s   ~25 s  pytest tests/test_augment.py test_train.py test_models.py, CUDA on
#   airbench        70 s   ~35 s  airbench94, unmodified: 1 warm-up + 5 runs, its own clock
#   fast           100 s   ~50 s  ablate's fast recipe through ablate.train: 1 warm-up (2 epochs)
#                                 + 5 seeds of 12 epochs
#   speedrun        60 s   ~30 s  the same for the 'speedrun' recipe (the record airbench94_muon's
#                                 recipe in ablate; airbench94's is speedrun_legacy), only where
#                                 studies/speedrun.toml exists
#   airbench_muon  120 s   ~90 s? the record, as in PART=fusion, 5 runs
#   packing        165 s  ~150 s  depth study at --per-gpu 1, 2, 4, 8: 30 s window + wind-down each
#   suite         the rest ~160 s `ablate run all` from the repository's results.db: most figures
#                                 and claims per FLOP first, its --budget the time left
#   finish          35 s   ~15 s  ablate status + report, summary.json, tarballs
set -uo pipefail
cd "$(dirname "$0")/.."
T0=$(date +%s)
REPO=$PWD
OUT="${OUT:-bench/out/gpu}"
DEVICE="${DEVICE:-cuda}"
QUICK="${QUICK:-0}"          # 1: tiny settings, to check the script itself on a CPU
PART="${PART:-fusion}"       # fusion | baseline | speedrun | suite (above)
DEADLINE="${DEADLINE:-520}"  # seconds after the start by which everything has ended
RESERVE=35
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work=$(mktemp -d /tmp/gpucheck.XXXXXX)   # outside the project tree: data, airbench's files, databases
mkdir -p "$work/bench" "$work/suite"
: > "$work/steps.tsv"
export PYTHONUNBUFFERED=1
exec > >(tee "$OUT/gpu_check.log") 2>&1

now() { date +%s; }
left() { echo $(( DEADLINE - RESERVE - ($(now) - T0) )); }
step() { echo; echo "=== $1 ($(date -u +%H:%M:%S), $(( $(now) - T0 )) s in, $(left) s left before the reserve)"; }
# timed NAME CAP command...: runs it under `timeout` (SIGINT first, as Ctrl-C, then KILL 10 s
# later), capped by the time left less those 10 s; records name, rc, seconds, timeout and the
# exact command.
timed() {
    local name=$1 cap=$2; shift 2
    local t=$(( $(left) - 10 ))
    [ "$t" -gt "$cap" ] && t=$cap
    local cmd; cmd=$(printf '%q ' "$@")
    if [ "$t" -lt 20 ] && [ "$t" -lt "$cap" ]; then
        echo "skipped $name: ${t} s left" >&2
        printf '%s\t%s\t%s\t%s\t%s\n' "$name" skipped 0 "$t" "$cmd" >> "$work/steps.tsv"
        return 0
    fi
    echo "\$ $cmd  (timeout ${t} s)" >&2
    local t0; t0=$(date +%s%N)
    timeout -s INT -k 10 "$t" "$@"; local rc=$?
    local ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    [ "$rc" = 124 ] && echo "--- $name: timed out after ${t} s" >&2
    printf '%s\t%s\t%s\t%s\t%s\n' "$name" "$rc" "$((ms / 1000)).$(printf %03d $((ms % 1000)))" "$t" "$cmd" >> "$work/steps.tsv"
    return 0
}

# the_record CAP RUNS: the record, airbench94_muon.py, unmodified, as prepare_device.sh brought it:
# its compile warm-up, then RUNS runs on its own clock, into bench/airbench_muon.json.
the_record() {
    if [ -f .device/airbench/airbench94_muon.py ]; then
        timed airbench_muon "$1" python3 bench/bench_airbench.py --airbench .device/airbench/airbench94_muon.py \
            --root "$work/airbench" --runs "$2" --budget $(( $1 - 10 )) --out "$work/bench/airbench_muon.json"
    else
        echo "no .device/airbench/airbench94_muon.py (run bench/prepare_device.sh)"
        echo '{"skipped": "airbench94_muon.py not brought (bench/prepare_device.sh)"}' > "$work/bench/airbench_muon.json"
    fi
}

step "environment"
if [ -d .whl ] && ! python3 -c "import sqlalchemy, alembic, pytorch_optimizer" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}" || echo "warning: the wheels did not install"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"   # the checkout itself, uninstalled
python3 - "$work/env.json" <<'PY'
import json, platform, sys, datetime, importlib.metadata as md
import torch
cuda = torch.cuda.is_available()
versions = {}
for name in ("torch", "torchvision", "numpy", "scipy", "pandas", "matplotlib", "typer", "rich", "pyarrow",
             "sqlalchemy", "alembic", "mako", "pytorch-optimizer", "typing-extensions", "pillow", "pytest"):
    try:
        versions[name] = md.version(name)
    except md.PackageNotFoundError:
        versions[name] = None
env = {"date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
       "host": platform.node(), "python": sys.version.split()[0], "python_path": sys.executable,
       "torch": torch.__version__, "torch_cuda": torch.version.cuda, "cuda_available": cuda,
       "device_name": torch.cuda.get_device_name(0) if cuda else None,
       "capability": list(torch.cuda.get_device_capability(0)) if cuda else None,
       "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else None,
       "cpu_count": __import__("os").cpu_count(), "versions": versions}
json.dump(env, open(sys.argv[1], "w"), indent=2)
print(json.dumps(env))
PY
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv | tee "$work/nvidia-smi.csv"
python3 -c "import ablate.cli, ablate.store, ablate.stats, ablate.optim, ablate.report" && echo "ablate imports: ok"
python3 -m ablate --help > /dev/null && echo "ablate CLI: ok"

step "data"
data="$work/cifar"
if [ -f .device/cifar10-jpeg.npz ]; then
    timed unpack 90 python3 .device/cifar10_jpeg.py folder "$data"
    [ -d "$data/train" ] && [ -d "$data/test" ] || { echo "unpacking failed: synthetic data instead"; data=synthetic; }
else
    echo "no .device/cifar10-jpeg.npz (run bench/prepare_device.sh): synthetic data instead"
    data=synthetic
fi
# Decodes the tree once (ablate's cache beside it: every later load reads the cache) and writes
# airbench's files from the very same tensors, in the work folder, outside the project tree.
[ "$PART" = suite ] || timed export_cifar_pt 60 python3 bench/export_cifar_pt.py --data "$data" --dest "$work/airbench" --out "$work/bench/data.json"

if [ "$QUICK" = 1 ]; then
    tests=(tests/test_augment.py)
    fast_args=(--seeds 1 --set train_subset=128 --set batch_size=64 --set epochs=1 --test-subset 200)
    air_runs=1
    pack_args=(--ks 1 2 --epochs 1 --window 25 --set train_subset=500)
    suite_data=synthetic   # a CPU evaluates 10k test images slowly; the real data ran in packing
    suite_set=(--set train_subset=500)
    # On a CPU a fused group of 5 needs minutes per epoch of the real data: synthetic, 500 images.
    fusion_args=(--data synthetic --epochs 1 --seeds 3 --window 50 --set train_subset=256 --check 3 --check-images 256
                 --check-epochs 1 --runs kernel/alone=1:1 kernel/fused3=1:3 kernel/fused3x2=2:3)
    recipe_args=(--data synthetic --epochs 1 --set train_subset=128)
else
    tests=(tests/test_augment.py tests/test_train.py tests/test_models.py)
    fast_args=(--seeds 5 --warmup-epochs 2)   # the warm-up loads kernels and fills caches; untimed
    air_runs=5
    pack_args=(--ks 1 2 4 8 --epochs 3 --window 30)
    suite_data=$data
    suite_set=()
    fusion_args=(--data "$data" --epochs 20 --seeds 5 --window 20 --check 5 --check-images 5000 --check-epochs 2
                 --runs depth/alone=1:1 depth/fused5=1:5 depth/packed8=8:1 depth/fused5x8=8:5
                        kernel/alone=1:1 kernel/fused5x8=8:5 kernel/packed8=8:1 kernel/fused5=1:5 depth/fused2=1:2)
    recipe_args=(--data "$data" --epochs 2)
fi
if [ "$PART" = fusion ]; then
    tests=(tests/test_augment.py tests/test_train.py tests/test_fusion.py)
    [ "$QUICK" = 1 ] && tests=(tests/test_augment.py)
    [ "$QUICK" = 1 ] || fast_args=(--seeds 3 --warmup-epochs 2)   # fewer than baseline: the time goes to fusion
    [ "$QUICK" = 1 ] || air_runs=3
fi

if [ "$PART" = speedrun ]; then
    tests=(tests/test_augment.py tests/test_speedrun.py tests/test_record_parity.py tests/test_compile.py)
    [ "$QUICK" = 1 ] && tests=(tests/test_record_parity.py)
fi
[ "$PART" = suite ] || step "tests on $DEVICE"
[ "$PART" = suite ] || timed pytest "$([ "$PART" = fusion ] || [ "$PART" = speedrun ] && echo 45 || echo 60)" python3 -m pytest -q -x -p no:cacheprovider --junitxml="$work/bench/pytest.xml" "${tests[@]}"

if [ "$PART" = speedrun ]; then
    # Ten of each, every side after a warm-up as long as a timed run (the record's own warm-up
    # is a whole run on random labels, its compile inside it): ablate eager first, then the
    # record, then ablate compiled with a profile of 20 of its steps.
    if [ "$QUICK" = 1 ]; then
        # a width a CPU trains in seconds; 16 steps, room for a profile of 2 after its 10 + 2 skipped
        sr_args=(--seeds 2 --set train_subset=256 --set batch_size=16 --set epochs=1 --set "model.widths=[8,16,16]"
                 --test-subset 100)
        sr_runs=2
        sr_profile=2
    else
        sr_args=(--seeds 10)
        sr_runs=10
        sr_profile=20
    fi
    step "speedrun through ablate.train, eager (1 warm-up + ${sr_args[1]} seeds)"
    timed speedrun 90 python3 bench/bench_fast.py --study speedrun --data "$data" --device "$DEVICE" "${sr_args[@]}" \
        --budget 80 --out "$work/bench/speedrun.json"
    step "the record, airbench94_muon (unmodified; compiled in its warm-up, off its clock; $sr_runs runs)"
    the_record 150 "$sr_runs"
    step "speedrun through ablate.train, --compile (1 warm-up + ${sr_args[1]} seeds, then $sr_profile steps profiled)"
    timed compiled 150 python3 bench/bench_fast.py --study speedrun --data "$data" --device "$DEVICE" "${sr_args[@]}" \
        --compile --profile-steps "$sr_profile" --budget 140 --out "$work/bench/speedrun_compiled.json"
fi

if [ "$PART" = fusion ]; then
    step "fusion: fused groups against one at a time and packing, 20-epoch points"
    timed fusion 170 python3 bench/bench_fusion.py "${fusion_args[@]}" --device "$DEVICE" \
        --budget 160 --workdir "$work/bench/fusion" --out "$work/bench/fusion.json"
    step "long recipes: a few epochs each (best, ranger, densenet)"
    timed recipes 70 python3 bench/bench_recipes.py "${recipe_args[@]}" --device "$DEVICE" --budget 50 \
        --out "$work/bench/recipes.json"
fi

if [ "$PART" != suite ] && [ "$PART" != speedrun ]; then   # the suite part gives all its time to the studies
step "airbench94 (unmodified; $air_runs runs after a warm-up)"
if [ -f .device/airbench/airbench94.py ]; then
    timed airbench "$([ "$PART" = fusion ] && echo 35 || echo 70)" python3 bench/bench_airbench.py --airbench .device/airbench/airbench94.py \
        --root "$work/airbench" --runs "$air_runs" --budget 60 --out "$work/bench/airbench.json"
else
    echo "no .device/airbench/airbench94.py (run bench/prepare_device.sh)"
    echo '{"skipped": "airbench94.py not brought (bench/prepare_device.sh)"}' > "$work/bench/airbench.json"
fi

if [ "$PART" = baseline ]; then
step "fast recipe through ablate.train (ResNet-9, one-cycle, 12 epochs)"
timed fast 100 python3 bench/bench_fast.py --study fast --data "$data" --device "$DEVICE" "${fast_args[@]}" \
    --budget 90 --out "$work/bench/fast.json"
fi
if [ -f studies/speedrun.toml ]; then
    step "speedrun recipe through ablate.train (the record airbench94_muon's recipe)"
    timed speedrun "$([ "$PART" = fusion ] && echo 40 || echo 60)" python3 bench/bench_fast.py --study speedrun \
        --data "$data" --device "$DEVICE" "${fast_args[@]}" --budget 50 --out "$work/bench/speedrun.json"
fi
fi
if [ "$PART" != suite ] && [ "$PART" != speedrun ]; then
step "the record, airbench94_muon (unmodified; compiled in its warm-up, off its clock; $air_runs runs)"
the_record 120 "$air_runs"
fi
if [ "$PART" = fusion ] && [ -f studies/speedrun.toml ]; then
    step "speedrun recipe, its step compiled (torch.compile, CUDA graphs; --compile)"
    timed compiled 55 python3 bench/bench_fast.py --study speedrun --data "$data" --device "$DEVICE" "${fast_args[@]}" \
        --compile --budget 50 --out "$work/bench/speedrun_compiled.json"
fi

if [ "$PART" = baseline ]; then
step "packing: the depth study at K points per GPU"
timed packing 165 python3 bench/bench_packing.py --study depth --data "$data" --device "$DEVICE" \
    "${pack_args[@]}" --budget 160 --workdir "$work/bench/packing" --out "$work/bench/packing.json"

fi

if [ "$PART" = baseline ] || [ "$PART" = suite ]; then
step "the report's studies: ablate run all, most figures and claims per FLOP first, into results.db"
# It goes on from the repository's results.db (more seeds of the committed variants), and
# stops cleanly at its budget; bring results.tgz back and `ablate merge` its results.db.
[ -f "$REPO/results.db" ] && cp "$REPO/results.db" "$work/suite/results.db"
if [ "$QUICK" = 1 ]; then
    suite_args=(--studies depth,batchnorm --seeds 1 --epochs 1 --per-gpu 2)
else
    suite_args=(--seeds "${SUITE_SEEDS:-3}" --epochs "${SUITE_EPOCHS:-4}" --per-gpu "${SUITE_PER_GPU:-8}")
fi
suite_cap=$(( $(left) - 10 ))
# The budget ends 20 s before the step's own timeout: the runners stop after their step and
# put the unfinished points back, to be resumed by the next window.
(cd "$work/suite" && timed suite "$suite_cap" python3 -m ablate run all "${suite_args[@]}" --budget "$(( suite_cap - 20 ))s" \
    --data "$suite_data" --device "$DEVICE" --db sqlite:///results.db ${suite_set[@]+"${suite_set[@]}"} \
    < /dev/null > >(tee "$work/suite/run_all.log") 2>&1)

step "status and report"
RESERVE=0
(cd "$work/suite" && timed status 15 python3 -m ablate status --db sqlite:///results.db --json > "$work/status.json")
(cd "$work/suite" && timed report 30 python3 -m ablate report --db sqlite:///results.db --out reports)
fi

step "summary"
python3 - "$work" "$OUT" "$DEVICE" "$QUICK" "$T0" "$PART" <<'PY' > "$OUT/summary.json"
import json, sys, pathlib, time
work, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
device, quick, t0, part = sys.argv[3], sys.argv[4] == "1", int(sys.argv[5]), sys.argv[6]

def read(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except Exception as e:  # a step that failed or never ran
        return {"missing": f"{pathlib.Path(path).name}: {type(e).__name__}"}

steps = []
for line in (work / "steps.tsv").read_text().splitlines():
    name, rc, seconds, timeout, cmd = line.split("\t")
    steps.append({"step": name, "rc": None if rc == "skipped" else int(rc), "skipped": rc == "skipped",
                  # 124: stopped by SIGINT at the timeout; 137: killed 10 s after it
                  "timed_out": rc == "124" or (rc == "137" and float(seconds) >= int(timeout)),
                  "seconds": float(seconds), "timeout_s": int(timeout),
                  "command": cmd.strip()})
by = {s["step"]: s for s in steps}

def ratio(a, b, digits=3):
    try:
        return round(a / b, digits)
    except Exception:
        return None

def diff(a, b, digits=4):
    try:
        return round(a - b, digits)
    except Exception:
        return None

def keep(d, drop=("config", "hyp", "command")):
    return {k: v for k, v in d.items() if k not in drop} if isinstance(d, dict) else d

air = read(work / "bench/airbench.json")
versus = {"airbench94": keep(air)}
record = read(work / "bench/airbench_muon.json")
if (work / "bench/airbench_muon.json").exists():
    versus["airbench94_muon"] = keep(record)
steps_of = {"fast": "fast", "speedrun": "speedrun", "speedrun_compiled": "compiled"}
for recipe in ("fast", "speedrun", "speedrun_compiled"):
    if not (work / f"bench/{recipe}.json").exists() and steps_of[recipe] not in by:
        continue
    mine = read(work / f"bench/{recipe}.json")
    versus[f"ablate_{recipe}"] = keep(mine)
    versus[f"{recipe}_config"] = mine.get("config")
    if mine.get("mean_seconds") and air.get("mean_seconds"):
        versus[f"{recipe}_time_ratio_ablate_over_airbench"] = ratio(mine.get("mean_seconds"), air.get("mean_seconds"))
        versus[f"{recipe}_train_time_ratio_ablate_over_airbench"] = ratio(mine.get("mean_train_seconds"), air.get("mean_seconds"))
        versus[f"{recipe}_acc_minus_airbench_tta"] = diff(mine.get("mean_acc"), air.get("mean_acc"))
        versus[f"{recipe}_acc_minus_airbench_no_tta"] = diff(mine.get("mean_acc"), air.get("mean_acc_no_tta"))
    if mine.get("mean_seconds") and record.get("mean_seconds"):
        versus[f"{recipe}_time_ratio_ablate_over_record"] = ratio(mine.get("mean_seconds"), record.get("mean_seconds"))
        versus[f"{recipe}_acc_minus_record_tta"] = diff(mine.get("mean_acc"), record.get("mean_acc"))
versus["note"] = ("same data (CIFAR-10 JPEG copy, decoded once by ablate); ablate: CUDA events around "
                  "ablate.train.train (model build and every evaluation the recipe asks for inside), "
                  "train_seconds its per-epoch training times alone; airbench: its own clock (whitening "
                  "init, training, final evaluation with test-time augmentation)")

speedrun = {}  # PART=speedrun: each side's spread, and ablate against the record
for side, name in (("record", "airbench_muon"), ("eager", "speedrun"), ("compiled", "speedrun_compiled")):
    d = read(work / f"bench/{name}.json")
    speedrun[side] = {k: d.get(k) for k in ("n", "mean_acc", "std_acc", "mean_acc_no_tta", "mean_seconds", "std_seconds",
                                             "mean_train_seconds", "skipped", "missing") if d.get(k) is not None}
    if side != "record":
        speedrun[side]["time_ratio_over_record"] = ratio(d.get("mean_seconds"), record.get("mean_seconds"))
        speedrun[side]["acc_minus_record"] = diff(d.get("mean_acc"), record.get("mean_acc"))
    if isinstance(d.get("profile"), dict):
        speedrun[side]["profile"] = {k: v for k, v in d["profile"].items() if k != "top"}
        speedrun[side]["profile"]["top"] = d["profile"].get("top", [])[:12]

packing = read(work / "bench/packing.json")
if isinstance(packing.get("results"), list):
    for r in packing["results"]:
        r.pop("command", None)
    packing["command"] = by.get("packing", {}).get("command")

status = read(work / "status.json")
suite = []  # per study of `ablate run all`: what the suite's database holds after it
for st in status.get("studies", []) if isinstance(status.get("studies"), list) else []:
    runs = [{k_: r.get(k_) for k_ in ("label", "seed", "status", "test_acc", "wall_s", "epochs_done")}
            for r in st.get("runs", [])]
    suite.append({"study": st["name"], "counts": st.get("counts"), "best_test_acc": st.get("best_test_acc"),
                  "variants": [{k_: v.get(k_) for k_ in ("key", "differs", "points", "done_points", "seeds")}
                               for v in st.get("variants", [])], "runs": runs})
suite_step = by.get("suite", {})
reports = sorted(p.name for p in (work / "suite/reports").glob("*")) if (work / "suite/reports").is_dir() else []

tests_rc = by.get("pytest", {}).get("rc")
tests = {"rc": tests_rc, "passed": tests_rc == 0, "command": by.get("pytest", {}).get("command")}
try:
    import xml.etree.ElementTree as ET
    suite_xml = ET.parse(work / "bench/pytest.xml").getroot()
    suite_xml = suite_xml.find("testsuite") if suite_xml.tag == "testsuites" else suite_xml
    tests.update({k: float(suite_xml.get(k, 0)) if k == "time" else int(suite_xml.get(k, 0))
                  for k in ("tests", "failures", "errors", "skipped", "time")})
    tests["failed"] = [f"{c.get('classname')}::{c.get('name')}" for c in suite_xml.iter("testcase")
                       if c.find("failure") is not None or c.find("error") is not None]
except Exception as e:
    tests["xml"] = f"unreadable: {type(e).__name__}"
fusion = read(work / "bench/fusion.json")
if isinstance(fusion.get("results"), list):
    for r in fusion["results"]:
        r.pop("command", None)
    fusion["command"] = by.get("fusion", {}).get("command")
summary = {
    "quick": quick, "device_arg": device, "part": part,
    "environment": read(work / "env.json"),
    "checkout": read("./.device/checkout.json"),
    "airbench_source": read("./.device/airbench/SOURCE.json"),
    "record_source": read("./.device/airbench/SOURCE_muon.json"),
    "total_seconds": int(time.time()) - t0,
    "steps": steps,
    "data": read(work / "bench/data.json"),
    "tests": tests,
    "fast_vs_airbench": versus,
    "speedrun": speedrun if part == "speedrun" else None,
    "packing": packing,
    "fusion": fusion,
    "recipes": read(work / "bench/recipes.json"),
    "suite": {"studies": suite, "rc": suite_step.get("rc"), "seconds": suite_step.get("seconds"),
              "command": suite_step.get("command"), "report_rc": by.get("report", {}).get("rc"), "report_files": reports,
              "tarball": "results.tgz: results.db and reports/, for the repository's top level"},
}
print(json.dumps(summary, indent=2, default=str))
PY
if ! python3 -c "import json, sys; json.load(open(sys.argv[1]))" "$OUT/summary.json" 2>/dev/null; then
    echo "summary.json could not be assembled (see the traceback above): the raw step records instead"
    python3 -c "import json, sys; print(json.dumps({'summary_error': 'see gpu_check.log', 'steps_tsv': open(sys.argv[1]).read().splitlines()}, indent=2))" \
        "$work/steps.tsv" > "$OUT/summary.json"
fi
# The figure suite, to commit at the top level; the benchmarks' raw files beside it.
[ -f "$work/suite/results.db" ] && (cd "$work/suite" && tar -czf "$OUT/results.tgz" $(ls -d results.db reports 2>/dev/null))
(cd "$work" && tar -czf "$OUT/bench.tgz" --exclude='*.pt' --exclude='*-checkpoints' --exclude='*.db-wal' --exclude='*.db-shm' \
    bench steps.tsv env.json $(ls status.json nvidia-smi.csv 2>/dev/null) $(cd "$work" && ls suite/*.log 2>/dev/null))
ls -la "$OUT"
python3 - "$OUT/summary.json" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
print(f"\n{'step':<22}{'rc':>5}{'seconds':>9}{'timeout':>9}")
for x in s["steps"]:
    print(f"{x['step']:<22}{'skip' if x['skipped'] else x['rc']:>5}{x['seconds']:>9.1f}{x['timeout_s']:>9}")
for side, d in (s.get("speedrun") or {}).items():
    if d.get("n"):
        print(f"speedrun {side:<9} n={d['n']} acc {d['mean_acc']:.4f} +- {d['std_acc']:.4f}  "
              f"{d['mean_seconds']:.2f} +- {d['std_seconds']:.2f} s/run  x{d.get('time_ratio_over_record')} of the record")
v = s["fast_vs_airbench"]
for side in ("airbench94", "airbench94_muon", "ablate_fast", "ablate_speedrun", "ablate_speedrun_compiled"):
    if side not in v:
        continue
    d = v[side]
    if d.get("n"):
        print(f"{side:<12} n={d['n']} acc {d['mean_acc']:.4f} +- {d['std_acc']:.4f}  {d['mean_seconds']:.2f} s/run")
    else:
        print(f"{side:<12} {d.get('skipped') or d.get('missing') or 'no runs'}")
for recipe in ("fast", "speedrun", "speedrun_compiled"):
    if f"{recipe}_time_ratio_ablate_over_airbench" in v:
        print(f"time {recipe} / airbench94 = {v[f'{recipe}_time_ratio_ablate_over_airbench']}")
    if f"{recipe}_time_ratio_ablate_over_record" in v:
        print(f"time {recipe} / airbench94_muon = {v[f'{recipe}_time_ratio_ablate_over_record']}")
for r in s["fusion"].get("results", []):
    print(f"fusion {r['study']}/{r['setup']} (K={r['per_gpu']}, G={r['fuse']}): {r['points_per_hour']} points/h, "
          f"steady {r['steady_points_per_hour']} ({r.get('steady_points_per_hour_vs_alone')}x alone), "
          f"GPU {r['gpu_util_mean']} %, {r['gpu_mem_max_mib']} MiB")
if s["fusion"].get("check"):
    print(f"fusion check: {s['fusion']['check']}")
if s["fusion"].get("toy_suite_minutes"):
    print(f"toy suite at 5 seeds x 20 epochs: {s['fusion']['toy_suite_minutes']} min at the best steady rate")
for r in s["recipes"].get("recipes", []):
    print(f"recipe {r['recipe']}: {[round(e['wall_s'], 1) for e in r['epochs']]} s per epoch, "
          f"{r['full_epochs']} epochs ~ {r['projected_full_s']} s, peak {r['peak_memory_mib']} MiB")
for r in s["packing"].get("results", []):
    print(f"packing K={r['k']}: {r['points_per_hour']} points/h ({r.get('points_per_hour_vs_k1')}x K=1), "
          f"steady {r['steady_points_per_hour']}, GPU {r['gpu_util_mean']} %")
for st in s["suite"]["studies"]:
    print(f"suite {st['study']:<13} {st['counts']}")
print(f"total {s['total_seconds']} s")
PY
[ $? = 0 ] || echo "(no table: summary.json is incomplete)"
# The device machine is given back bare; here, on a trial, the work folder goes (60k files: slow).
[ "$QUICK" = 1 ] && rm -rf "$work" || echo "work folder left in place: $work"
exec >&- 2>&-   # let tee write the end of gpu_check.log before the call returns
sleep 1
