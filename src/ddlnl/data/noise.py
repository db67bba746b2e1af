"""Label-noise models: a transition matrix per model (or a per-image one), one seeded realisation.

Noise with a transition matrix is realised the way the paper's code (DD_LNL ``utils_noise.py``)
does it: each sample in dataset order draws its noisy label with
``RandomState(seed).multinomial(1, P[clean_label])``, so for seed 0 and the official train
order the noisy labels are the paper's. Unlike the paper's code, the seed is honoured.
``instance`` noise is not in the paper; it draws from ddlnl's seed streams.

Models (``N`` samples, ``C`` classes, nominal rate ``n``):

- ``symmetric``: to a uniformly chosen *other* class (P = n/(C-1) off the diagonal);
  realised rate ≈ n. The paper's and Co-teaching's convention.
- ``symmetric_inclusive``: to a uniformly chosen class, possibly the true one (P = n/C);
  realised rate ≈ n(C-1)/C. DivideMix's convention.
- ``asymmetric``: CIFAR-10 truck→automobile, bird→airplane, cat↔dog, deer→horse with
  probability n (the other five classes are untouched, so the overall rate ≈ n/2);
  CIFAR-100: each class to the next class of its superclass (cyclically) with probability n.
  The paper's code omits ``mouse`` from ``small_mammals`` so class 50 never flips; here all
  five subclasses of every superclass take part (documented fix).
- ``pairflip``: class i to class (i+1) mod C with probability n.
- ``instance``: instance-dependent noise, the generator of Xia et al. (NeurIPS 2020, "Part-dependent
  label noise"); each image's flip probability and flip target depend on its pixels (see
  :func:`realise_instance`). It has no fixed transition matrix, only a realised one.
- Human label sets (CIFAR-10N ``aggre``, ``random1..3``, ``worst``; CIFAR-100N ``noisy100``):
  read from the official files; the rate is whatever the annotators produced.
- ``given``: the labels a user has (``--labels FILE``, :mod:`ddlnl.data.given`), nothing
  added; their rate is known only where clean labels are (a benchmark's own, or
  ``--clean-labels FILE``), and is ``None`` otherwise.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ddlnl.errors import ConfigError
from ddlnl.utils.seeds import stream_seed

INSTANCE_NOISE = "instance"
SYNTHETIC_NOISE = ("clean", "symmetric", "symmetric_inclusive", "asymmetric", "pairflip", INSTANCE_NOISE)
HUMAN_NOISE = ("aggre", "random1", "random2", "random3", "worst", "noisy100")
GIVEN_NOISE = "given"
NOISE_TYPES = SYNTHETIC_NOISE + HUMAN_NOISE + (GIVEN_NOISE,)

# CIFAR-10 structured flips (source -> target), DD_LNL / Co-teaching convention.
CIFAR10_ASYMMETRIC_FLIPS = {9: 1, 2: 0, 3: 5, 5: 3, 4: 7}


@dataclass(frozen=True)
class NoiseSpec:
    """What noise to apply: a model name, its nominal rate and the realisation seed."""

    type: str = "symmetric"
    rate: float = 0.0
    seed: int = 0

    def __post_init__(self):
        if self.type not in NOISE_TYPES:
            raise ConfigError(f"unknown noise type {self.type!r}", f"use one of: {', '.join(NOISE_TYPES)}")
        try:
            rate = float(self.rate)
        except (TypeError, ValueError):
            raise ConfigError(f"noise rate {self.rate!r} is not a number", "pass a rate such as 0.2, 0.4 or 0.8") from None
        if not (0.0 <= rate < 1.0):
            raise ConfigError(f"noise rate {self.rate!r} is outside [0, 1)", "pass a rate such as 0.2, 0.4 or 0.8")
        if self.type in HUMAN_NOISE and rate != 0.0:
            raise ConfigError(
                f"noise {self.type!r} is a human label set; its rate is fixed by the label file",
                "drop --rate (or set it to 0) for CIFAR-N label sets",
            )
        if self.type in ("clean", GIVEN_NOISE) and rate != 0.0:
            raise ConfigError(f"noise {self.type!r} takes no rate", "drop --rate or choose a synthetic noise model")
        if not isinstance(self.seed, (int, np.integer)) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**32:
            raise ConfigError(f"noise seed must be an integer in [0, 2**32), got {self.seed!r}", "pass a seed such as 0, 1 or 2")
        object.__setattr__(self, "rate", rate)
        object.__setattr__(self, "seed", int(self.seed))

    @classmethod
    def create(cls, type: str = "symmetric", rate: float | None = None, seed: int = 0) -> NoiseSpec:
        """The one place that knows which noise takes a rate: human label sets and ``clean``
        take none (``rate`` None or 0), a synthetic model defaults to :data:`DEFAULT_RATE`."""
        if rate is None:
            rate = 0.0 if not takes_rate(type) else DEFAULT_RATE
        return cls(type, rate, seed)

    @property
    def is_human(self) -> bool:
        return self.type in HUMAN_NOISE

    @property
    def takes_rate(self) -> bool:
        return takes_rate(self.type)

    @property
    def tag(self) -> str:
        """The setting without its seed, file-name safe: ``symmetric-0.4``, ``aggre``, ``clean``."""
        return f"{self.type}-{self.rate:g}" if self.takes_rate else self.type

    @property
    def name(self) -> str:
        """The setting as tables show it: ``symmetric 0.4``, ``aggre``, ``clean``."""
        return f"{self.type} {self.rate:g}" if self.takes_rate else self.type

    @property
    def slug(self) -> str:
        """A file-name-safe tag with the seed, e.g. ``symmetric-0.4-s0`` or ``worst``."""
        return f"{self.tag}-s{self.seed}" if self.takes_rate else self.tag


DEFAULT_RATE = 0.4


def takes_rate(noise_type: str) -> bool:
    """Synthetic noise models have a nominal rate; human label sets, ``given`` and ``clean`` do not."""
    return noise_type not in HUMAN_NOISE and noise_type not in ("clean", GIVEN_NOISE)


@dataclass
class NoisyLabels:
    """One realisation of noisy training labels, with how it was made and what it turned out to be."""

    labels: np.ndarray  # int64 (N,)
    spec: NoiseSpec
    nominal_rate: float | None
    actual_rate: float | None  # None: no clean labels to measure it against (a user's own labels)
    transition: np.ndarray | None  # realised (C, C): row i = distribution of noisy labels of true class i

    @property
    def clean_known(self) -> bool:
        """Whether clean labels exist beside these: without them, no analysis may compare against any."""
        return self.actual_rate is not None

    def subset(self, keep: np.ndarray, clean: np.ndarray) -> NoisyLabels:
        """The realisation restricted to ``keep`` (positions), its rates recomputed against ``clean[keep]``."""
        labels, clean = self.labels[keep], np.asarray(clean)[keep]
        if not self.clean_known:
            return NoisyLabels(labels, self.spec, None, None, None)
        C = self.transition.shape[0]
        return NoisyLabels(labels, self.spec, self.nominal_rate, float(np.mean(labels != clean)) if labels.size else 0.0,
                           empirical_transition(clean, labels, C))

    def rates_text(self) -> str:
        """``nominal 0.4000, actual 0.3987``, or why there is no rate."""
        if not self.clean_known:
            return "rate unknown (no clean labels)"
        return f"nominal {self.nominal_rate:.4f}, actual {self.actual_rate:.4f}"

    def summary(self) -> dict:
        known = self.clean_known
        return {
            "type": self.spec.type,
            "nominal_rate": round(float(self.nominal_rate), 6) if self.nominal_rate is not None else None,
            "actual_rate": round(float(self.actual_rate), 6) if known else None,
            "transition": np.round(self.transition, 4).tolist() if known else None,
            "seed": self.spec.seed,
        }


def transition_matrix(noise: str, rate: float, num_classes: int, dataset: str = "") -> np.ndarray:
    """The nominal (C, C) transition matrix P[true, noisy] of a synthetic noise model."""
    C, n = num_classes, float(rate)
    if noise == "clean" or n == 0.0:
        return np.eye(C)
    if noise == "symmetric":
        P = np.full((C, C), n / (C - 1))
        np.fill_diagonal(P, 1.0 - n)
        return P
    if noise == "symmetric_inclusive":
        return np.full((C, C), n / C) + (1.0 - n) * np.eye(C)
    if noise == "pairflip":
        P = (1.0 - n) * np.eye(C)
        P[np.arange(C), (np.arange(C) + 1) % C] += n
        return P
    if noise == "asymmetric":
        return _asymmetric_matrix(n, C, dataset)
    if noise == INSTANCE_NOISE:
        raise ConfigError("instance-dependent noise has no fixed transition matrix (it depends on each image)",
                          "read the realised one: ddlnl noise --noise instance, or noise.json of a run")
    raise ConfigError(f"{noise!r} has no transition matrix", "human label sets are read from their files")


def _asymmetric_matrix(n: float, C: int, dataset: str) -> np.ndarray:
    P = np.eye(C)
    if dataset == "cifar10" and C == 10:
        for s, t in CIFAR10_ASYMMETRIC_FLIPS.items():
            P[s, s], P[s, t] = 1.0 - n, n
        return P
    if dataset == "cifar100" and C == 100:
        from ddlnl.data.cifar import CIFAR100_SUPERCLASS_OF_FINE

        superclass = np.asarray(CIFAR100_SUPERCLASS_OF_FINE)
        for sc in np.unique(superclass):
            members = np.flatnonzero(superclass == sc)  # ascending fine index = alphabetical
            for i, s in enumerate(members):
                t = members[(i + 1) % len(members)]
                P[s, s], P[s, t] = 1.0 - n, n
        return P
    raise ConfigError(
        f"asymmetric noise is defined for cifar10 and cifar100 only, not {dataset!r}",
        "use --noise pairflip for a structured flip on other datasets",
    )


def realise(clean_labels: np.ndarray, P: np.ndarray, seed: int) -> np.ndarray:
    """Draw one noisy label per sample, in order, with ``RandomState(seed).multinomial``."""
    rng = np.random.RandomState(seed)
    noisy = np.empty_like(clean_labels, dtype=np.int64)
    if not np.allclose(P.sum(axis=1), 1.0):
        raise ValueError("transition matrix rows must sum to 1")
    for i, y in enumerate(clean_labels):  # sequential, so a given seed reproduces the paper's draw
        noisy[i] = int(np.argmax(rng.multinomial(1, P[y], 1)[0]))
    return noisy


INSTANCE_FLIP_STD = 0.1  # std of the per-sample flip rate around the nominal one (Xia et al.'s norm_std)


def instance_projection(seed: int, true_class: int, features: int, num_classes: int) -> np.ndarray:
    """W[y] of :func:`realise_instance`: the (features, C) standard-normal projection of true class y,
    one seed stream per class (so a class's projection does not depend on which others are present)."""
    rng = np.random.default_rng(stream_seed(seed, "noise.instance.projection", true_class))
    return rng.standard_normal((features, num_classes))


def realise_instance(images: np.ndarray, clean_labels: np.ndarray, num_classes: int, rate: float, seed: int) -> np.ndarray:
    """Xia et al.'s instance-dependent noise: the flip rate and the flip target depend on the image.

    Sample i flips with probability q_i ~ N(rate, 0.1) truncated to [0, 1]; if it flips, it goes to
    class j != y with probability softmax_j(x_i . W[y]) over the other classes, where W[y] is a (d, C)
    standard-normal projection of its true class y and x_i its flattened raw pixels (uint8 values
    0-255, HWC order, as the published code feeds them). At that scale the softmax is nearly
    one-hot, so an image's flip target is almost fixed by its pixels. q, each W[y] and the
    categorical draws come from separate seed streams; one matmul per class keeps it fast.
    Rate 0 flips nothing (the truncated normal would still flip about 8 %).
    """
    from scipy.special import softmax
    from scipy.stats import truncnorm

    y = np.asarray(clean_labels, dtype=np.int64)
    noisy = y.copy()
    if rate == 0.0 or y.size == 0:
        return noisy
    if images is None or len(images) != len(y):
        raise ConfigError("instance-dependent noise needs the training images, one per label",
                          "pass images=<uint8 (N, H, W, 3) training images> to make_noisy_labels")
    x = np.asarray(images).reshape(len(y), -1)
    sd = INSTANCE_FLIP_STD
    q = truncnorm.rvs(-rate / sd, (1.0 - rate) / sd, loc=rate, scale=sd, size=y.size,
                      random_state=np.random.default_rng(stream_seed(seed, "noise.instance.rate")))
    u = np.random.default_rng(stream_seed(seed, "noise.instance.draw")).random(y.size)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        a = x[idx].astype(np.float64) @ instance_projection(seed, int(c), x.shape[1], num_classes)
        a[:, c] = -np.inf
        p = q[idx, None] * softmax(a, axis=1)
        p[:, c] += 1.0 - q[idx]
        noisy[idx] = np.minimum((u[idx, None] >= np.cumsum(p, axis=1)).sum(axis=1), num_classes - 1)
    return noisy


def empirical_transition(clean: np.ndarray, noisy: np.ndarray, num_classes: int) -> np.ndarray:
    counts = np.zeros((num_classes, num_classes))
    np.add.at(counts, (clean, noisy), 1)
    return counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)


def make_noisy_labels(
    dataset: str,
    clean_labels: np.ndarray,
    num_classes: int,
    spec: NoiseSpec,
    *,
    data_root: str | Path | None = None,
    train_index: np.ndarray | None = None,
    images: np.ndarray | None = None,
) -> NoisyLabels:
    """Realise ``spec`` on ``clean_labels`` (the training split of ``dataset``).

    For human label sets, ``train_index`` maps a subsampled training split (long-tailed or
    reduced) back to positions in the full label file. ``images`` (uint8, one per label) are
    what instance-dependent noise reads; the other models ignore them.
    """
    clean_labels = np.asarray(clean_labels, dtype=np.int64)
    if spec.type == GIVEN_NOISE:
        raise ConfigError("noise 'given' takes its labels from a file", "pass --labels FILE (Python: ExperimentSpec(labels=...))")
    if spec.is_human:
        from ddlnl.data.cifarn import load_human_labels
        from ddlnl.data.registry import load_dataset, resolve_data_root

        root = resolve_data_root(data_root)
        full_clean = load_dataset(dataset, root).train.labels
        full_noisy = load_human_labels(dataset, spec.type, root, full_clean)
        nominal = float(np.mean(full_noisy != full_clean))
        idx = np.arange(len(full_clean)) if train_index is None else np.asarray(train_index)
        noisy = full_noisy[idx].astype(np.int64)
    elif spec.type == INSTANCE_NOISE:
        noisy = realise_instance(images, clean_labels, num_classes, spec.rate, spec.seed)
        nominal = spec.rate
    else:
        P = transition_matrix(spec.type, spec.rate, num_classes, dataset)
        noisy = realise(clean_labels, P, spec.seed)
        nominal = spec.rate
    return NoisyLabels(
        labels=noisy,
        spec=spec,
        nominal_rate=nominal,
        actual_rate=float(np.mean(noisy != clean_labels)) if len(noisy) else 0.0,
        transition=empirical_transition(clean_labels, noisy, num_classes),
    )


def labels_digest(labels: np.ndarray) -> str:
    """A short content hash of a label array (keys caches of experts and realisations)."""
    return hashlib.sha256(np.ascontiguousarray(labels, dtype=np.int64).tobytes()).hexdigest()[:16]


def format_transition(T: np.ndarray, classes=None) -> str:
    """The transition matrix as an aligned text table (rows: true class, columns: noisy)."""
    C = T.shape[0]
    names = [str(c)[:6] for c in (classes or range(C))]
    width = max(6, max(len(n) for n in names))
    lines = [" " * width + " " + " ".join(f"{n:>{width}}" for n in names)]
    for i in range(C):
        lines.append(f"{names[i]:>{width}} " + " ".join(f"{T[i, j]:>{width}.3f}" for j in range(C)))
    return "\n".join(lines)


def spec_dict(spec: NoiseSpec) -> dict:
    return asdict(spec)


def selection_scores(kept: np.ndarray, correct: np.ndarray, among: np.ndarray | None = None, *,
                     assigned: np.ndarray | None = None, clean: np.ndarray | None = None) -> dict:
    """How well a selection of training samples (a boolean mask, or indices) picks the correctly labelled
    ones: precision = share of the kept whose label is correct, recall = share of the correctly labelled
    that are kept. One definition for every method that keeps or filters samples. ``among``: the
    positions the selection was made from, when not all (then ``kept`` are positions among them too).
    ``assigned``: labels the method gave the kept samples (indices ``kept``, e.g. TAD's pseudo-labels),
    scored with ``clean`` as ``label_accuracy``, the share of them that is the clean label."""
    if assigned is not None:
        idx = np.asarray(kept, dtype=np.int64)
        hits = np.asarray(assigned, dtype=np.int64) == np.asarray(clean, dtype=np.int64)[idx]
        return selection_scores(kept, correct, among) | {"label_accuracy": float(hits.mean()) if idx.size else None}
    correct = np.asarray(correct, dtype=bool)
    kept = np.asarray(kept)
    if among is not None:
        among = np.asarray(among, dtype=np.int64)
        kept = np.isin(among, kept) if kept.dtype != bool else kept
        return selection_scores(kept, correct[among]) | {"judged": int(among.size)}
    mask = kept.astype(bool) if kept.dtype == bool else np.isin(np.arange(correct.size), kept)
    n_kept, hits = int(mask.sum()), int((mask & correct).sum())
    return {"precision": hits / n_kept if n_kept else None, "recall": hits / max(int(correct.sum()), 1),
            "kept_fraction": n_kept / max(correct.size, 1)}
