"""DD_LNL's experiment grid (src/ddlnl/study/dd_lnl_grid.yaml) and the shipped paper studies: the
studies expand (nothing runs) to exactly the table's cells, and the table has the counts the
DD_LNL configs imply."""

from collections import Counter
from pathlib import Path

import pytest

from ddlnl.data.noise import HUMAN_NOISE
from ddlnl.distill import datm, rcig
from ddlnl.study.dd_lnl_grid import GRID_FILE, load_grid, load_table, study_cells
from ddlnl.study.spec import load_study

ROOT = Path(__file__).resolve().parents[1]
# the studies that reproduce DD_LNL; cifar10-longtail-paper.yaml is ddlnl's own (DD_LNL has no imbalance code)
DD_LNL_STUDIES = ["cifar10-symmetric-paper", "cifar10-asymmetric-paper", "cifar10n-paper", "cifar100-paper",
                  "cifar100n-paper", "tinyimagenet-paper"]
RATES = (0.2, 0.4, 0.6, 0.8)
CIFAR10N = ("aggre", "random1", "random2", "random3", "worst")


@pytest.fixture(scope="module")
def grid():
    return load_grid()


def test_the_paper_studies_expand_to_exactly_dd_lnls_grid(grid):
    per_file = {name: study_cells(load_study(ROOT / "studies" / f"{name}.yaml")) for name in DD_LNL_STUDIES}
    union = set().union(*per_file.values())
    assert union == grid, f"missing: {sorted(grid - union)[:5]}; extra: {sorted(union - grid)[:5]}"
    assert sum(len(c) for c in per_file.values()) == len(grid)  # no cell in two studies
    # every *-paper study is one of these, except ddlnl's own long-tail study
    shipped = {p.stem for p in (ROOT / "studies").glob("*-paper.yaml")}
    assert shipped - set(DD_LNL_STUDIES) == {"cifar10-longtail-paper"}
    assert all(c.imbalance is not None for c in load_study(ROOT / "studies" / "cifar10-longtail-paper.yaml").cells)


def test_the_table_has_the_counts_dd_lnls_configs_imply(grid):
    table = load_table()
    assert table["ipcs"] == {"cifar10": [1, 10, 50, 500, 1000], "cifar100": [1, 10, 50, 100], "tinyimagenet": [1, 10, 50]}

    def settings(method, dataset):
        return {(c.noise, c.rate) for c in grid if c.method == method and c.dataset == dataset}

    def ipcs(method, dataset, noise=None):
        return sorted({c.ipc for c in grid if c.method == method and c.dataset == dataset and noise in (None, c.noise)})

    sym = {("symmetric", r) for r in RATES}
    asym = {("asymmetric", r) for r in RATES}
    c10 = sym | asym | {(n, 0.0) for n in CIFAR10N}
    c100 = sym | asym | {("noisy100", 0.0)}
    assert set(CIFAR10N) | {"noisy100"} == set(HUMAN_NOISE)  # ddlnl's names for DD_LNL's aggre, rand1-3, worst, noisy100
    for method in ("datm", "dance", "rcig"):
        assert settings(method, "cifar10") == c10 and len(c10) == 13
        assert settings(method, "cifar100") == c100 and len(c100) == 9
        assert settings(method, "tinyimagenet") == sym  # symmetric only
    # DATM: every config DD_LNL ships; CIFAR-100N stops at IPC 50
    assert ipcs("datm", "cifar10") == [1, 10, 50, 500, 1000]
    assert ipcs("datm", "cifar100", "symmetric") == ipcs("datm", "cifar100", "asymmetric") == [1, 10, 50, 100]
    assert ipcs("datm", "cifar100", "noisy100") == [1, 10, 50]
    assert ipcs("datm", "tinyimagenet") == [1, 10, 50]
    # DANCE and RCIG: IPC 1/10/50 (ddlnl's choice), RCIG on Tiny-ImageNet at the IPCs it has configs for
    for ds in ("cifar10", "cifar100"):
        assert ipcs("dance", ds) == ipcs("rcig", ds) == [1, 10, 50]
    assert ipcs("dance", "tinyimagenet") == [1, 10, 50] and ipcs("rcig", "tinyimagenet") == [1, 10]
    # every combination above is in the grid: a full product per (method, dataset, noise)
    per = Counter((c.method, c.dataset) for c in grid)
    assert per == {("datm", "cifar10"): 13 * 5, ("datm", "cifar100"): 8 * 4 + 1 * 3, ("datm", "tinyimagenet"): 4 * 3,
                   ("dance", "cifar10"): 13 * 3, ("dance", "cifar100"): 9 * 3, ("dance", "tinyimagenet"): 4 * 3,
                   ("rcig", "cifar10"): 13 * 3, ("rcig", "cifar100"): 9 * 3, ("rcig", "tinyimagenet"): 4 * 2}
    assert Counter(c.method for c in grid) == {"datm": 112, "dance": 78, "rcig": 74} and len(grid) == 264


def test_every_grid_cell_has_a_paper_row_for_its_method(grid):
    """``setting: auto`` resolves for every DATM and RCIG cell of the grid (the tables' keys only; nothing runs)."""
    for c in grid:
        if c.method == "datm":
            assert datm.paper_setting(c.dataset, c.ipc, c.noise, c.rate)
        elif c.method == "rcig":
            assert rcig.paper_setting(c.dataset, c.ipc)[1]


def test_the_table_ships_with_the_package():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ddlnl"]
    assert GRID_FILE.relative_to(ROOT / "src" / "ddlnl").match(next(p for p in patterns if p.startswith("study/")))
