"""Every distiller and baseline end to end on CUDA (benchmarks/gpu/smoke_cuda.sh).

Device-placement bugs (a tensor made on the CPU meeting one on the GPU) cannot show on a
CPU-only machine; this runs where a GPU is present and is skipped, saying so, elsewhere.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_every_method_and_baseline_runs_on_cuda(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/smoke_cuda.sh"), "cuda", str(tmp_path)],
                       capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == 9, r.stdout


def test_batched_gpu_script_runs_dry_on_the_cpu():
    """benchmarks/gpu/batched.sh --dry: the GPU script's two benchmarks at tiny sizes on the CPU, so a
    lent GPU's few minutes are not spent finding a broken script."""
    env = dict(os.environ, PYTHON=sys.executable, PYTHONPATH=f"{ROOT / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    r = subprocess.run(["bash", str(ROOT / "benchmarks/gpu/batched.sh"), "--dry"], capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "| 256 | 2 |" in r.stdout and "| 1 | 10 | 2 | exact | 8 |" in r.stdout, r.stdout
    assert r.stdout.count("GPU utilisation: n/a") == 2
