# The names ddlnl/__init__.py imports on first use, for type checkers (keep the two lists the same;
# tests/test_api.py checks that they are).
from ddlnl import api as api
from ddlnl import distill as distill
from ddlnl import evaluate as evaluate
from ddlnl.baselines import BASELINES as BASELINES
from ddlnl.baselines import Baseline as Baseline
from ddlnl.baselines import BaselineContext as BaselineContext
from ddlnl.baselines import list_baselines as list_baselines
from ddlnl.baselines import register_baseline as register_baseline
from ddlnl.data.noise import NoiseSpec as NoiseSpec
from ddlnl.distill import DISTILLERS as DISTILLERS
from ddlnl.distill import Capabilities as Capabilities
from ddlnl.distill import DistillContext as DistillContext
from ddlnl.distill import Distiller as Distiller
from ddlnl.distill import list_distillers as list_distillers
from ddlnl.distill import register_distiller as register_distiller
from ddlnl.errors import ConfigError as ConfigError
from ddlnl.errors import DataError as DataError
from ddlnl.errors import DdlnlError as DdlnlError
from ddlnl.evaluate import EvalResult as EvalResult
from ddlnl.results import read_result as read_result
from ddlnl.run import run_experiment as run_experiment
from ddlnl.spec import ExperimentSpec as ExperimentSpec
from ddlnl.synset import SyntheticSet as SyntheticSet

__version__: str
__all__: list[str]
