"""Matching set images back to training images (synset), and scripts/label_purity.py's soft-label report."""

import numpy as np
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.synset import SyntheticSet, match_training_images
from tests.scripts_loader import load_script

label_purity = load_script("label_purity")


def _set(images, labels):
    return SyntheticSet(images, labels, Preprocessor("none"))


def test_exact_training_images_match_and_moved_ones_do_not():
    g = torch.Generator().manual_seed(0)
    train = torch.rand(50, 3, 4, 4, generator=g)
    pick = torch.tensor([7, 3, 41])
    idx, _ = match_training_images(train[pick] + 1e-6, train)
    assert idx.tolist() == pick.tolist()
    moved = train[pick] + 0.5 * torch.randn(3, 3, 4, 4, generator=g)
    idx, why = match_training_images(moved, train)
    assert idx is None and "match distance" in why


def test_soft_label_report_reads_given_and_true_class(capsys):
    # slot 0 correctly labelled; slots 1 and 2 mislabelled (given 1, true 2 and 0)
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 1.0, 3.0], [0.0, 4.0, 0.0]])
    noisy, clean = np.array([0, 1, 1]), np.array([0, 2, 0])
    label_purity.report_soft_labels(_set(torch.zeros(3, 3, 4, 4), logits), noisy, clean)
    out = capsys.readouterr().out
    p = torch.softmax(logits, 1).numpy()
    assert f"p(given class) {p[0, 0]:.3f} on correctly labelled slots" in out
    assert "argmax = noisy label 66.7%, = clean label 66.7%" in out
    assert "on the 2 mislabelled slots" in out and "true class ranked first on 50.0%" in out
    assert f"p(true class) {(p[1, 2] + p[2, 0]) / 2:.3f}" in out
