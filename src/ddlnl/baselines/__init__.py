"""Baselines trained on the full noisy training set, on the same backbone as the evaluation.

Registered by name: ``ce`` (= ``results.full_noisy``), ``gce``, ``sce``, ``coteaching``,
``dividemix``, the optional ``cleanlab``, and two more readings of the CE row: ``ce_converged``
(a long schedule, final epoch) and ``ce_selected`` (the epoch best on the noisy validation
split). See ``baselines/base.py`` for the interface.
"""

from ddlnl.baselines import ce_variants as _ce_variants  # noqa: F401  (registers ce_converged, ce_selected)
from ddlnl.baselines import cleanlab_prune as _cleanlab  # noqa: F401
from ddlnl.baselines import coteaching as _coteaching  # noqa: F401
from ddlnl.baselines import dividemix as _dividemix  # noqa: F401
from ddlnl.baselines import losses as _losses  # noqa: F401  (registers ce, gce, sce)
from ddlnl.baselines.base import (
    BASELINES,
    Baseline,
    BaselineContext,
    BaselineUnavailable,
    baseline_class,
    create_baseline,
    list_baselines,
    parse_baselines,
    register_baseline,
)
from ddlnl.baselines.full_noisy import train_full_noisy

__all__ = ["BASELINES", "Baseline", "BaselineContext", "BaselineUnavailable", "baseline_class", "create_baseline", "list_baselines",
           "parse_baselines", "register_baseline", "train_full_noisy"]
