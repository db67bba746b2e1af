"""ddlnl: does distilling a noisy-labelled training set remove the label noise?

Measured answers for DATM, DANCE, RCIG, DM and classic noisy-label baselines on
CIFAR-10/100(N), Tiny-ImageNet and long-tailed variants.
"""

__version__ = "0.1.0"
