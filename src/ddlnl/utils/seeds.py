"""Seed streams by purpose: every random draw of a run derives from ``(seed, purpose, index)``.

Before, expert k and evaluation network r were both seeded ``seed*1000 + k``: evaluation
run r started from exactly expert r's initial weights, so a set matched to the experts was
"freshly" evaluated on networks it had been tuned for. Deriving every seed from the run seed,
a purpose name and an index through numpy's ``SeedSequence`` (a well-mixed hash) makes the
streams of different purposes independent, and a test checks that no evaluation network
starts from any expert's or distiller's weights.

The noise realisation is the one exception: it draws from ``RandomState(noise_seed)`` in
dataset order, as the paper's code does, so that seed 0 gives the paper's noisy labels.
"""

from __future__ import annotations

import zlib

import numpy as np

SCHEME = 2  # 1: seed*1000 + index (coupled streams); 2: SeedSequence(seed, crc32(purpose), *index)


def stream_seed(seed: int, purpose: str, *index: int) -> int:
    """A 63-bit seed for the draws of ``purpose`` number ``index`` under run seed ``seed``."""
    entropy = [int(seed), zlib.crc32(purpose.encode())] + [int(i) for i in index]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0] >> np.uint64(1))
