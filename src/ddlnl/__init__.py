"""ddlnl: does distilling a noisy-labelled training set remove the label noise?

Measured answers for DATM, DANCE, RCIG, DM and classic noisy-label baselines on
CIFAR-10/100(N), Tiny-ImageNet and long-tailed variants. The Python API (docs/api.md)::

    import ddlnl
    spec = ddlnl.ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="dm", ipc=10)
    result = ddlnl.run_experiment(spec, "runs/demo")

Its names are imported on first use (PEP 562), so that ``import ddlnl`` and ``ddlnl --help`` do
not load torch; ``__init__.pyi`` gives type checkers the same names.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module that defines it (a module itself where the name is a submodule)
_API = {
    "ExperimentSpec": "ddlnl.spec",
    "NoiseSpec": "ddlnl.data.noise",
    "run_experiment": "ddlnl.run",
    "api": "ddlnl.api",  # api.distill(spec), api.evaluate(synset, spec): the steps of run_experiment
    "distill": "ddlnl.distill",  # the distillers
    "evaluate": "ddlnl.evaluate",  # the evaluator
    "SyntheticSet": "ddlnl.synset",
    "EvalResult": "ddlnl.evaluate",
    "read_result": "ddlnl.results",
    "DISTILLERS": "ddlnl.distill",
    "Distiller": "ddlnl.distill",
    "DistillContext": "ddlnl.distill",
    "Capabilities": "ddlnl.distill",
    "register_distiller": "ddlnl.distill",
    "list_distillers": "ddlnl.distill",
    "BASELINES": "ddlnl.baselines",
    "Baseline": "ddlnl.baselines",
    "BaselineContext": "ddlnl.baselines",
    "register_baseline": "ddlnl.baselines",
    "list_baselines": "ddlnl.baselines",
    "DdlnlError": "ddlnl.errors",
    "ConfigError": "ddlnl.errors",
    "DataError": "ddlnl.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name not in _API:
        raise AttributeError(f"module 'ddlnl' has no attribute {name!r}")
    module = importlib.import_module(_API[name])
    return module if module.__name__ == f"ddlnl.{name}" else getattr(module, name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
