"""Baselines trained on the full noisy training set, on the same backbone as the evaluation."""

from ddlnl.baselines.full_noisy import train_full_noisy

__all__ = ["train_full_noisy"]
