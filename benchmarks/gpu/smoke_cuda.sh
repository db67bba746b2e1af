#!/usr/bin/env bash
# Every distiller and baseline end to end on one device (default cuda) with the smoke preset,
# on a generated 10-class ImageFolder fixture: finds device-placement bugs in seconds.
# Usage: benchmarks/gpu/smoke_cuda.sh [DEVICE] [WORKDIR]
set -uo pipefail
device=${1:-cuda}
work=${2:-/tmp/ddlnl-smoke-$device}
py=${PYTHON:-python3}
rm -rf "$work"; mkdir -p "$work"
"$py" - "$work/fixture" <<'PY'
import sys
from pathlib import Path
import numpy as np
from PIL import Image
root, rng = Path(sys.argv[1]), np.random.default_rng(0)
for split, n in (("train", 24), ("test", 6)):
    for c in range(10):
        d = root / split / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            mean = rng.integers(0, 256, 3)
            img = np.clip(rng.normal(mean, 40, (32, 32, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:03d}.png")
PY
fail=0
run() {
  local name=$1; shift
  local t0=$SECONDS
  if "$py" -m ddlnl run --dataset "folder:$work/fixture" --noise symmetric --rate 0.4 --preset smoke \
      --device "$device" --no-progress --out "$work/runs/$name" "$@" >"$work/$name.log" 2>&1; then
    echo "ok    $name ($((SECONDS - t0)) s)"
  else
    echo "FAIL  $name ($((SECONDS - t0)) s)"; tail -25 "$work/$name.log"; fail=1
  fi
}
for m in dm mtt datm dance rcig; do run "$m" --method "$m" --ipc 2; done
run native-dance --method dance --ipc 2 --eval native
run native-rcig --method rcig --ipc 2 --eval native
run baselines --method dm --ipc 2 --baselines all
run compiled-ce --method dm --ipc 2 --set baseline.train.compile=true
exit $fail
