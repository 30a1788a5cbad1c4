#!/usr/bin/env bash
# Gathers what the GPU machine lacks into git-ignored folders that `carry` can name:
#   .whl/     wheels for Python 3.12 (the machine has torch, typer, rich, pandas,
#             matplotlib, but not SQLAlchemy, Alembic or pytorch-optimizer)
#   .device/  the CIFAR-10 JPEG copy (18 MB) and its unpacking script
# Run here, once, from the repository root; then bench/gpu_check.sh runs there.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude || echo '/.whl/' >> .git/info/exclude
grep -qx '/.device/' .git/info/exclude || echo '/.device/' >> .git/info/exclude
mkdir -p .whl .device
platforms=""
for n in 28 27 17; do platforms+=" --platform manylinux_2_${n}_x86_64"; done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp $platforms --platform manylinux2014_x86_64 -d .whl \
    "sqlalchemy>=2.0,<3" "alembic" "mako" "pytorch-optimizer" "typing-extensions>=4.12"
shared="${SHARED:-../shared}/datasets"
cp "$shared/cifar10-jpeg.npz" "$shared/cifar10_jpeg.py" .device/
du -sh .whl .device
