#!/usr/bin/env bash
# Paper-preset CIFAR-10 runs on one GPU, started in the background (setsid) so they outlive
# the shell that starts them; each writes WORK/<name>.log and its run folder WORK/<name>/.
#   benchmarks/gpu/paper_cifar10.sh start WORK    start the jobs
#   benchmarks/gpu/paper_cifar10.sh status WORK   one line per job: finished / running, last log line
# Jobs (40% symmetric noise, IPC 10, seed 0, the `paper` preset, the common protocol):
#   dm     DM 20k iterations, full-noisy CE (3 runs), random control, ResNet-18 cross-arch
#   dance  DANCE 5 experts x 60 epochs, 10k iterations, full-noisy CE (1 run), controls
#   timing per-iteration time of RCIG, DATM and MTT at paper settings (40 iterations each, ddlnl distill)
set -uo pipefail
cmd=${1:?start or status}; work=${2:?work folder}
py=${PYTHON:-python3}
common=(--dataset cifar10 --noise symmetric --rate 0.4 --ipc 10 --seed 0 --preset "${PRESET:-paper}" --device "${DEVICE:-cuda}" --no-progress)
job() {  # name, command...
  local name=$1; shift
  setsid bash -c 'start=$(date +%s); "$@"; rc=$?; echo "[job] exit $rc after $(( $(date +%s) - start )) s"' _ "$@" \
    >"$work/$name.log" 2>&1 < /dev/null &
}
case $cmd in
start)
  mkdir -p "$work"
  job dm "$py" -m ddlnl run "${common[@]}" --method dm --set baseline.runs=3 --out "$work/dm" --json
  job dance "$py" -m ddlnl run "${common[@]}" --method dance --set baseline.runs=1 --out "$work/dance" --json
  job timing bash -c "
    for m in rcig datm mtt; do
      echo \"== \$m\"; t0=\$(date +%s)
      $py -m ddlnl distill ${common[*]} --method \$m --set methods.\$m.iterations=40 \
        \$( [ \$m = rcig ] || echo --set methods.\$m.num_experts=1 ) --out $work/timing-\$m.pt
      echo \"== \$m done in \$(( \$(date +%s) - t0 )) s\"
    done"
  sleep 2; ls "$work" ;;
status)
  for f in "$work"/*.log; do
    printf '%-8s %s\n' "$(basename "$f" .log)" "$(grep -c '^\[job\] exit' "$f" | sed 's/1/finished/;s/0/running/')"
    tail -3 "$f"
  done ;;
esac
