#!/usr/bin/env bash
# Paper-preset CIFAR-10 runs on one GPU (figures in docs/gpu.md). Jobs start in the background
# with setsid, so they outlive the shell that starts them; each writes WORK/<name>.log.
#   benchmarks/gpu/paper_cifar10.sh runs WORK     full paper runs: dm and dance (below)
#   benchmarks/gpu/paper_cifar10.sh timing WORK   per-iteration speed of every distiller (one job, in turn)
#   benchmarks/gpu/paper_cifar10.sh status WORK   one line per job: finished / running, last log lines
# Setting: CIFAR-10, 40% symmetric noise, IPC 10, seed 0, `paper` preset, common protocol.
#   dm      DM 20k iterations + full-noisy CE (1 run) + random control + ResNet-18 cross-arch (about 2 h on an H100)
#   dance   DANCE 5 experts x 60 epochs + 10k iterations + the same controls (about 1 h)
#   timing  `ddlnl distill` with few iterations (and one expert) per method; the log prints each
#           method's wall time and, for RCIG, seconds per iteration
# PRESET and DEVICE override the preset and device (PRESET=smoke DEVICE=cpu checks the script).
set -uo pipefail
cmd=${1:?runs, timing or status}; work=${2:?work folder}
py=${PYTHON:-python3}
common=(--dataset cifar10 --noise symmetric --rate 0.4 --ipc 10 --seed 0 --preset "${PRESET:-paper}"
        --device "${DEVICE:-cuda}" --no-progress)
job() {  # name, command...: run in its own session, log to WORK/name.log
  local name=$1; shift
  setsid bash -c 'start=$(date +%s); "$@"; rc=$?; echo "[job] exit $rc after $(( $(date +%s) - start )) s"' _ "$@" \
    >"$work/$name.log" 2>&1 </dev/null &
}
timing() {  # method, iterations, extra options...
  local m=$1 it=$2; shift 2
  local t0; t0=$(date +%s)
  echo "== $m: $it iterations $*"
  "$py" -m ddlnl distill "${common[@]}" --method "$m" --set "methods.$m.iterations=$it" "$@" --out "$work/timing-$m.pt"
  echo "== $m: $(( $(date +%s) - t0 )) s wall (data loading, experts and set-up included)"
}
case $cmd in
runs)
  mkdir -p "$work"
  job dm "$py" -m ddlnl run "${common[@]}" --method dm --set baseline.runs=1 --out "$work/dm" --json
  job dance "$py" -m ddlnl run "${common[@]}" --method dance --set baseline.runs=1 --out "$work/dance" --json ;;
timing)
  mkdir -p "$work"
  job timing bash "$0" timing-sequence "$work" ;;
timing-sequence)  # what the timing job runs, in its own session
  timing dm 300
  timing dance 100 --set methods.dance.num_experts=1
  timing rcig 40
  timing datm 40 --set methods.datm.num_experts=1
  timing mtt 40 --set methods.mtt.num_experts=1 ;;
status)
  for f in "$work"/*.log; do
    printf '%-8s %s\n' "$(basename "$f" .log)" "$(grep -q '^\[job\] exit' "$f" && echo finished || echo running)"
    grep -v -i warn "$f" | tail -3
  done ;;
*) echo "unknown command $cmd: use runs, timing or status" >&2; exit 2 ;;
esac
