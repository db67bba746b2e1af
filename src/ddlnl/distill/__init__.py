"""Distillers, registered by name: ``random`` (control), ``dm``, ``mtt``, ``datm``, ``datm_trusted``, ``tad``, ``dance`` and ``rcig``."""

from ddlnl.distill.base import (
    DISTILLERS,
    Capabilities,
    DistillContext,
    Distiller,
    create_distiller,
    distiller_class,
    list_distillers,
    register_distiller,
)
from ddlnl.distill import random as _random  # noqa: F401  (registers 'random')
from ddlnl.distill import dm as _dm  # noqa: F401  (registers 'dm')
from ddlnl.distill import mtt as _mtt  # noqa: F401  (registers 'mtt')
from ddlnl.distill import datm as _datm  # noqa: F401  (registers 'datm' and 'datm_trusted')
from ddlnl.distill import tad as _tad  # noqa: F401  (registers 'tad')
from ddlnl.distill import dance as _dance  # noqa: F401  (registers 'dance')
from ddlnl.distill import rcig as _rcig  # noqa: F401  (registers 'rcig')

__all__ = ["DISTILLERS", "Capabilities", "DistillContext", "Distiller", "create_distiller", "distiller_class", "list_distillers",
           "register_distiller"]
