#!/usr/bin/env bash
# Every GPU figure of BENCHMARKS.md "Training throughput" in one run on a CUDA machine:
# a synthetic dataset the size of the real LIDC cube set, both GPU profiles with the
# variants around them, and 30 epochs of the recommended profile.
#
#   bash bench/gpu_training.sh [OUT_DIR]       # figures land in OUT_DIR (default bench-out)
#
# On a machine without lungcad installed, carry the MONAI wheel in .whl/ (the device
# tool's machine has torch, numpy, pandas, scikit-learn and nvidia-ml-py but not MONAI):
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#       --implementation cp --platform manylinux2014_x86_64 -d .whl monai==1.6.1
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-${OUT:-bench-out}}
mkdir -p "$out"
if [ -d .whl ] && ! python3 -c "import monai" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD" PYTHONUNBUFFERED=1
data=${LUNGCAD_BENCH_DATA:-/tmp/lidc-size}
[ -f "$data/splits.json" ] || python3 bench/make_synthetic_dataset.py --out "$data"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
for profile in configs/real-lidc-gpu.yaml configs/real-lidc-gpu-fast.yaml; do
  python3 bench/train_throughput.py --params "$profile" --dataset "$data" \
    --splits "$data/splits.json" --matrix 2>&1 | tee -a "$out/train_throughput.txt"
done
python3 bench/train_throughput.py --params configs/real-lidc-gpu-fast.yaml --dataset "$data" \
  --splits "$data/splits.json" --epochs 30 2>&1 | tee "$out/train_30_epochs.txt"
