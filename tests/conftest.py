"""Tests run on one thread: on a 2-core machine two threads contend badly for tiny tensors."""

import torch

torch.set_num_threads(1)
