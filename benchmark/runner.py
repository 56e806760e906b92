"""Run a registered method over the samples of a store and score every prediction.

One JSON line per sample (dataset, sample index, dose, morphology, composition, method + version,
every metric) and, optionally, the predicted model of each sample as ``<index>.xyz``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

from simgen.progress import progress_bar

__all__ = ["run_method", "score_sample", "read_results", "METRIC_KEYS"]

logger = logging.getLogger(__name__)

#: The headline metrics of leaderboards and sweeps, with whether lower is better.
METRIC_KEYS = {
    "coordinate_error_pm": True,
    "recovery_rate": False,
    "recovery_rate_species": False,
    "precision": False,
    "species_accuracy": False,
}


def _elements_of(sample) -> list[str]:
    from ase.data import chemical_symbols

    if sample.get("elements") is not None and len(sample["elements"]):
        return [str(e) for e in sample["elements"]]
    return sorted({chemical_symbols[int(z)] for z in np.unique(sample["numbers"])})


def score_sample(prediction, sample, *, radius=1.0, align=False) -> dict:
    """Metrics of one prediction against the sample's true atoms (DESIGN.md metrics contract)."""
    from ase.data import chemical_symbols

    from benchmark.metrics import score

    true_elements = [chemical_symbols[int(z)] for z in sample["numbers"]]
    return score(
        np.asarray(prediction.positions, dtype=float).reshape(-1, 3),
        list(prediction.elements),
        np.asarray(sample["positions"], dtype=float).reshape(-1, 3),
        true_elements,
        radius=radius,
        align=align,
    )


def _json_safe(value):
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist())
    return value


_WORKER_METHOD = None


def _worker_init(method_name, options):
    global _WORKER_METHOD
    import torch

    torch.set_num_threads(1)
    from benchmark.methods import get_method

    _WORKER_METHOD = get_method(method_name, **(options or {}))


def _process(args):
    store, split, position, models_dir, radius, align, dataset_name = args
    from simgen.store import open_dataset

    ds = open_dataset(store)
    sample = (ds.filter(split=split) if split else ds)[position]
    return _run_one(_WORKER_METHOD, sample, models_dir, radius, align, dataset_name)


def _run_one(method, sample, models_dir, radius, align, dataset_name) -> dict:
    import time

    sample = dict(sample)
    sample["elements"] = _elements_of(sample)
    t0 = time.perf_counter()
    prediction = method.predict(sample)
    seconds = time.perf_counter() - t0
    metrics = score_sample(prediction, sample, radius=radius, align=align)
    index = int(sample["index"])
    if models_dir is not None:
        from models.cli import write_prediction

        probabilities = getattr(prediction, "confidence", None)
        classes = (getattr(prediction, "extra", None) or {}).get("classes")
        if probabilities is not None and np.ndim(probabilities) != 2:
            probabilities = None
        write_prediction(Path(models_dir) / f"{index}.xyz", prediction.positions, prediction.elements,
                         probabilities, classes, {"sample": index, "method": method.name})
    record = {
        "dataset": dataset_name,
        "index": index,
        "dose": float(sample.get("dose", np.nan)),
        "morphology": str(sample.get("morphology", "")),
        "composition": str(sample.get("composition", "")),
        "noise_model": str(sample.get("noise_model", "")),
        "split": str(sample.get("split", "")),
        "method": method.name,
        "method_version": getattr(method, "version", ""),
        "seconds": seconds,
        **metrics,
    }
    return _json_safe(record)


def run_method(
    method_name: str,
    store,
    out,
    *,
    models_dir=None,
    split: str | None = "test",
    limit: int | None = None,
    workers: int = 1,
    radius: float = 1.0,
    align: bool = False,
    options: dict | None = None,
    progress: bool | None = None,
) -> list[dict]:
    """Run ``method_name`` on the complete samples of ``store`` and write ``out`` (JSON lines).

    Parameters
    ----------
    split
        Only samples of this split (``None``: all). A store without that split (an imported
        external sample, say) falls back to all samples.
    workers
        Processes; each builds its own method instance and uses one torch thread.
    radius
        Matching radius in Å.
    """
    from benchmark.methods import get_method
    from simgen.store import open_dataset

    if workers < 1:
        raise ValueError(f"workers={workers}: expected a positive integer")
    method = get_method(method_name, **(options or {}))  # fail fast on unknown names/options
    ds = open_dataset(store)
    dataset_name = str(getattr(ds, "name", Path(store).name))
    view = ds.filter(split=split) if split else ds
    if split and len(view) == 0:
        logger.warning("no samples in split %r; running on all %d samples", split, len(ds))
        view, split = ds, None
    if len(view) == 0:
        raise ValueError(f"data={str(store)!r}: no complete samples")
    n = len(view) if limit is None else min(limit, len(view))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if models_dir is not None:
        Path(models_dir).mkdir(parents=True, exist_ok=True)
    records = []
    bar_desc = f"{method_name} on {dataset_name}"
    if workers == 1:
        for i in progress_bar(range(n), desc=bar_desc, unit="sample", enabled=progress):
            records.append(_run_one(method, view[i], models_dir, radius, align, dataset_name))
    else:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp

        jobs = [(str(store), split, i, models_dir, radius, align, dataset_name) for i in range(n)]
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                                 initargs=(method_name, options)) as pool:
            for record in progress_bar(pool.map(_process, jobs), total=n, desc=bar_desc, unit="sample", enabled=progress):
                records.append(record)
    records.sort(key=lambda r: r["index"])
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.")
    with os.fdopen(fd, "w") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
    os.replace(tmp, out)
    return records


def read_results(paths) -> list[dict]:
    """All records of one or more JSONL result files."""
    records = []
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"results={str(path)!r}: no such file")
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"results={str(path)!r} line {n}: not JSON ({exc.msg})") from None
    return records
