"""Distillers, registered by name: ``random`` (control) and ``dm``; more in later modules."""

from ddlnl.distill.base import DistillContext, Distiller, create_distiller, list_distillers, register_distiller
from ddlnl.distill import random as _random  # noqa: F401  (registers 'random')
from ddlnl.distill import dm as _dm  # noqa: F401  (registers 'dm')

__all__ = ["DistillContext", "Distiller", "create_distiller", "list_distillers", "register_distiller"]
