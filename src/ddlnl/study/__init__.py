"""Studies: YAML grids of experiment cells, run by one of three executors into a results
database, and reported as tables and figures. See docs/studies.md."""

from ddlnl.study.spec import Cell, StudySpec, load_study, parse_study

__all__ = ["Cell", "StudySpec", "load_study", "parse_study", "run_study", "write_report"]


def run_study(*args, **kwargs):
    from ddlnl.study.executors import run_study as _run

    return _run(*args, **kwargs)


def write_report(*args, **kwargs):
    from ddlnl.study.report import write_report as _write

    return _write(*args, **kwargs)
