import os

os.environ.setdefault("AET_PROGRESS", "0")
os.environ.setdefault("OMP_NUM_THREADS", "2")

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def smoke_store(tmp_path_factory):
    """The ``smoke`` dataset, generated once per test session.

    In-process (Dask's synchronous scheduler): the store is the same whatever the scheduler
    (tests/simgen/test_engine.py proves that on real clusters), and the fast suite starts none.
    """
    from simgen.catalog import get_dataset
    from simgen.engine import generate

    out = tmp_path_factory.mktemp("smoke") / "smoke.zarr"
    report = generate(
        get_dataset("smoke", REPO / "datasets.yaml"), out, scheduler="synchronous", progress=False
    )
    assert not report.failed
    return out


def write_tiny_store(
    path,
    samples,
    *,
    written=None,
    name: str = "tiny",
    sampling: float = 0.5,
    meta=None,
    consolidated: bool = True,
    **create_options,
):
    """A store of hand-made :class:`simgen.sample.Sample` objects, as the engine would write it.

    ``samples`` fixes the number of samples and the array shapes (all share the first one's
    angles and volume size); only the indices in ``written`` (default all) are written.
    ``create_options`` go to :class:`simgen.store.StoreLayout` (``max_atoms``, ``acquisition``,
    ...) or, for ``lossy``, ``spec``, ``overwrite`` and ``attrs``, to
    :func:`simgen.store.create_store`.
    """
    from simgen.catalog import StorageSpec
    from simgen.store import StoreLayout, consolidate, create_store, write_sample

    first = samples[0]
    spec = create_options.pop("spec", {})
    lossy = tuple(dict(create_options.pop("lossy", {})).items())
    passed = {k: create_options.pop(k) for k in ("overwrite", "attrs") if k in create_options}
    layout = StoreLayout(
        len(samples),
        n_angles=len(first.angles),
        size=first.volume.shape[0],
        sampling=sampling,
        **create_options,
    )
    create_store(
        path,
        {"name": name, **spec},
        layout,
        meta=meta,
        storage=StorageSpec(lossy=lossy),
        **passed,
    )
    for index in range(len(samples)) if written is None else written:
        write_sample(path, index, samples[index])
    if consolidated:
        consolidate(path)
    return path


@pytest.fixture()
def make_store():
    """The tiny-store writer :func:`write_tiny_store`, for tests that build stores by hand."""
    return write_tiny_store
