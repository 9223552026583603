"""The notebooks in ``notebooks/`` run top to bottom (fast mode) and are stored clean.

Each notebook is executed with nbclient in a fresh ``python3`` kernel (the interpreter running
pytest), with the working directory set to ``notebooks/`` and ``MEDRECON_FAST=1``; a cell that
raises fails the test with that cell's source and traceback. The kernel runs on one thread
(``OMP_NUM_THREADS=1``: the CI machine has 2 cores shared with other jobs).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT_S = 300  # per cell; fast mode needs a few seconds each


def _tracked_notebooks() -> list[Path]:
    """Notebooks known to git (all on disk as well, so uncommitted ones are checked too)."""
    paths = set(NOTEBOOKS)
    try:
        out = subprocess.run(
            ["git", "ls-files", "*.ipynb"],
            cwd=NOTEBOOK_DIR,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        paths |= {NOTEBOOK_DIR / line for line in out.splitlines() if line}
    except (OSError, subprocess.SubprocessError):
        pass
    return sorted(paths)


def test_notebooks_exist():
    names = {p.name for p in NOTEBOOKS}
    for expected in (
        "01_ct_sparse_angle.ipynb",
        "02_fastmri.ipynb",
        "03_train_a_prior.ipynb",
        "04_your_own_operator.ipynb",
    ):
        assert expected in names, f"notebooks/{expected} is missing"


@pytest.mark.parametrize("path", _tracked_notebooks(), ids=lambda p: p.name)
def test_notebook_stored_without_outputs(path: Path):
    assert path.is_file(), f"{path} is tracked by git but missing on disk"
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    dirty = [
        i
        for i, cell in enumerate(nb.cells)
        if cell.cell_type == "code" and (cell.get("outputs") or cell.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{path.name}: code cells {dirty} are stored with outputs or execution counts; "
        "clear them (Jupyter: Edit > Clear All Outputs) before committing"
    )
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", f"{path.name}: kernel must be python3"


def test_notebooks_use_only_public_api():
    """Notebooks import no private module or name (``medrecon._x`` / ``from medrecon... import _x``)."""
    import re

    private = re.compile(r"(import|from)\s+medrecon[\w.]*\._|from\s+medrecon[\w.]*\s+import\s+[^\n]*\b_\w")
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert not private.search(cell.source), f"{path.name}: private import in\n{cell.source}"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_in_fast_mode(path: Path):
    nb = nbformat.read(path, as_version=4)
    env = dict(
        os.environ,
        MEDRECON_FAST="1",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        OPENBLAS_NUM_THREADS="1",
        PYDEVD_DISABLE_FILE_VALIDATION="1",
    )
    env.pop("MPLBACKEND", None)  # the kernel's default inline backend (headless)
    client = nbclient.NotebookClient(
        nb, kernel_name="python3", timeout=CELL_TIMEOUT_S, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
    )
    # A raising cell raises nbclient's CellExecutionError naming the cell and its traceback.
    client.execute(env=env)
    errors = [
        out
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.get("output_type") == "error"
    ]
    assert not errors
