"""Seeds, devices and version stamps shared by every command."""

from __future__ import annotations

import platform
import random
import time
from pathlib import Path

import numpy as np
import torch

from ddlnl.errors import ConfigError, check_choice


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch from one run seed."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def set_deterministic(on: bool = True) -> None:
    """PyTorch's deterministic algorithms (cuDNN included): the same seed gives the same numbers on
    a GPU too, at some speed; an op with no deterministic kernel raises instead of running."""
    import os

    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS needs it for determinism
    torch.use_deterministic_algorithms(on)
    torch.backends.cudnn.deterministic = on
    torch.backends.cudnn.benchmark = not on and torch.backends.cudnn.benchmark


# ``--precision``: how CUDA runs float32 matmuls and convolutions. Without it PyTorch's own
# defaults stay (cuDNN convolutions in TF32, matmuls in IEEE fp32), as in every run made before it.
PRECISIONS = ("fp32", "tf32")


def set_precision(precision: str) -> None:
    """``fp32``: IEEE float32 matmuls and cuDNN convolutions on CUDA (what a CPU computes);
    ``tf32``: TensorFloat-32 for both (tensor cores of Ampere and later GPUs: several times the
    fp32 rate, with a 10-bit mantissa in the products). CPUs compute in IEEE fp32 either way."""
    check_choice("precision", precision, PRECISIONS)
    mode = "tf32" if precision == "tf32" else "ieee"
    torch.backends.cuda.matmul.fp32_precision = mode
    torch.backends.cudnn.conv.fp32_precision = mode


def cuda_precision() -> dict:
    """How CUDA computes float32 now (``machine()`` records it with every result)."""
    return {"matmul": torch.backends.cuda.matmul.fp32_precision, "cudnn_conv": torch.backends.cudnn.conv.fp32_precision}


def generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(int(seed))
    return g


def resolve_device(device: str | None) -> torch.device:
    """CUDA when present, else CPU; an explicit ``device`` wins."""
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ConfigError(f"invalid device {device!r} ({e})", "use cpu, cuda, cuda:0 or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available", "use --device cpu")
    return dev


def versions() -> dict:
    import ddlnl

    out = {
        "ddlnl": ddlnl.__version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
    try:
        import kornia

        out["kornia"] = kornia.__version__
    except Exception:  # pragma: no cover - kornia is a dependency, this is just a stamp
        pass
    return out


def machine() -> dict:
    info = {"platform": platform.platform(), "cpu_threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled()}
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
        info["cuda_fp32_precision"] = cuda_precision()
    return info


def remove_broken_compiled_kernels(min_age_s: float = 600.0, log=print) -> list[Path]:
    """Delete empty compiled kernels from torch.compile's (Inductor's) cache; returns their paths.

    Inductor caches each compiled kernel as a shared library. A process killed while the C++
    compiler writes one (a study cell stopped at the end of a sitting) leaves an empty ``.so``
    behind, and every later compile of that kernel loads it and fails ("file too short"), so a
    resumed run would fail where it should continue. Only files at least ``min_age_s`` old go:
    a compile still in progress is younger."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError:  # pragma: no cover - a torch without Inductor has no such cache
        return []
    root = Path(cache_dir())
    if not root.is_dir():
        return []
    now, removed = time.time(), []
    for path in root.rglob("*.so"):
        try:
            st = path.stat()
        except OSError:  # removed meanwhile by another process
            continue
        if st.st_size == 0 and now - st.st_mtime >= min_age_s:
            path.unlink(missing_ok=True)
            removed.append(path)
    if removed:
        log(f"[ddlnl] removed {len(removed)} empty compiled kernel(s) left in {root} by an interrupted compile")
    return removed
