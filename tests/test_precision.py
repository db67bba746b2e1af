"""``--precision``: how CUDA computes float32 (IEEE or TF32), set through PyTorch's own switches."""

from __future__ import annotations

import pytest
import torch

from ddlnl.errors import ConfigError
from ddlnl.utils.runtime import cuda_precision, set_precision


@pytest.fixture(autouse=True)
def restore_precision():
    before = cuda_precision()
    yield
    torch.backends.cuda.matmul.fp32_precision = before["matmul"]
    torch.backends.cudnn.conv.fp32_precision = before["cudnn_conv"]


def test_precision_sets_matmuls_and_convolutions():
    set_precision("tf32")
    assert cuda_precision() == {"matmul": "tf32", "cudnn_conv": "tf32"}
    set_precision("fp32")  # IEEE for both: convolutions too, which PyTorch's default runs in TF32
    assert cuda_precision() == {"matmul": "ieee", "cudnn_conv": "ieee"}


def test_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="bf16"):
        set_precision("bf16")
