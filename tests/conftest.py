"""Tests run on one thread: two OpenMP threads gain nothing on tiny tensors, and they spin-wait
pathologically (10-20x slower) when another process is using the machine's two cores."""

import torch

torch.set_num_threads(1)
