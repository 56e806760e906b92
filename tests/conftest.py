import os

os.environ.setdefault("AET_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """The ``smoke`` dataset, generated once per test session (one local Dask worker)."""
    from simgen.config import get_dataset
    from simgen.engine import generate

    out = tmp_path_factory.mktemp("smoke") / "smoke.zarr"
    report = generate(get_dataset("smoke", REPO / "datasets.yaml"), out, workers=1, progress=False)
    assert not report.failed
    return out
