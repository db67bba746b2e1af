#!/usr/bin/env bash
# The GPU figures of "many networks at once", in one run of under 8 minutes on one H100:
#   1. seconds per epoch per network for K = 1 and K = 10 networks side by side, on IPC-10 sets
#      (100 images) and at expert size (the last rows: full CIFAR-10 epochs of 196 batches of 256);
#   2. seconds per trajectory-matching iteration at DATM's CIFAR-10 IPC-10 paper shapes (width 128,
#      80 steps, soft labels), compiled steps without and with CUDA graphs (compile_mode: reduce-overhead);
#   3. the GPU's mean utilisation during each (nvidia-smi, every 200 ms).
# Usage: benchmarks/gpu/batched.sh [--dry]
#   --dry: tiny sizes on the CPU and no nvidia-smi (the tests run it; it checks the script, not a GPU).
set -euo pipefail
py=${PYTHON:-python3}
root=$(cd "$(dirname "$0")/../.." && pwd)
if [[ "${1:-}" == "--dry" ]]; then
  device=cpu
  side=(--preset smoke --sizes 10 --k 1,2 --epochs 1 --expert-batches 1)
  match=(--ipc 1 --steps 2 --width 8 --repeats 1 --warmup 0 --soft --modes exact)
else
  device=cuda
  side=(--sizes 100 --k 1,10 --epochs 3 --expert-batches 196)
  match=(--ipc 10 --steps 80 --width 128 --repeats 5 --warmup 2 --soft --modes exact-compiled exact-graphs)
fi
samples=$(mktemp)
trap 'rm -f "$samples"' EXIT
measured() {  # run "$@", then print the GPU's mean utilisation while it ran
  if [[ $device != cuda ]]; then "$@"; echo "GPU utilisation: n/a (dry run on the CPU)"; return; fi
  nvidia-smi --query-gpu=utilization.gpu --format=csv,noheader,nounits -lms 200 > "$samples" &
  local pid=$!
  "$@"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk '{s += $1; n++} END {if (n) printf "GPU utilisation: mean %.0f %% over %d samples\n", s / n, n}' "$samples"
}
[[ $device == cuda ]] && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
echo "== 1. networks side by side (bench_batched.py; the largest 'images' rows are expert epochs) =="
measured "$py" "$root/benchmarks/bench_batched.py" --device "$device" "${side[@]}"
echo "== 2. trajectory matching per iteration, compiled steps without / with CUDA graphs (bench_matching.py) =="
measured "$py" "$root/benchmarks/bench_matching.py" --device "$device" "${match[@]}"
