"""Run a registered method over the samples of a store and score every prediction.

One JSON line per sample (dataset, sample index, dose, morphology, composition, method + version,
every metric) and, optionally, the predicted model of each sample as ``<index>.xyz``.

Samples of stores that record beam damage (:mod:`simgen.damage`) can be scored against several
ground truths — the ``"initial"`` structure, the ``"final"`` one or the dose-weighted ``"mean"`` —
from one prediction: ``truth=("initial", "final")`` writes one line per sample and truth. Every
record carries ``truth``, ``total_dose`` (e/Å² over the series), ``tilt_scheme`` and
``damage_model`` (``"sequential"`` and ``"none"`` for stores without an acquisition record).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
from pathlib import Path

import numpy as np

from benchmark.results_schema import SCHEMA_VERSION, validate_record
from simgen.tools.errors import WorkFailed
from simgen.tools.outputs import staged_output, write_text_atomic
from simgen.tools.progress import progress_bar

__all__ = ["run_method", "score_sample", "read_results", "with_aet_errors", "METRIC_KEYS"]

logger = logging.getLogger(__name__)

#: The headline metrics of leaderboards and sweeps, with whether lower is better. The headline
#: coordinate error is the AET convention (each particle's rigid offset removed,
#: ``coordinate_error_aet_pm``); the raw one (offset kept) is shown beside it.
METRIC_KEYS = {
    "coordinate_error_aet_pm": True,
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


def score_sample(prediction, sample, *, radius=1.0, align=False, per_atom=False) -> dict:
    """Metrics of one prediction against the sample's true atoms (docs/design.md metrics contract).

    ``per_atom`` adds ``matches`` (true index, element, displacement of each pair) for paired
    comparisons between methods (:func:`benchmark.metrics.paired_errors`)."""
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
        per_atom=per_atom,
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
    store, split, position, models_dir, radius, align, dataset_name, truths = args
    from simgen.store import open_dataset

    ds = open_dataset(store)
    view = ds.filter(split=split) if split else ds
    return _run_one(_WORKER_METHOD, view, position, models_dir, radius, align, dataset_name, truths)


def _truths(truth) -> tuple[str, ...]:
    from simgen.store import TRUTHS

    truths = (truth,) if isinstance(truth, str) else tuple(truth)
    if not truths or any(t not in TRUTHS for t in truths) or len(set(truths)) != len(truths):
        raise ValueError(
            f"truth={truth!r}: expected one or more distinct values among {', '.join(TRUTHS)}"
        )
    return truths


def _read_sample(view, index: int, truth: str) -> dict:
    """Sample ``index``; an unreadable chunk is a one-line error naming the sample and array."""
    from simgen.store import DamagedDataError

    try:
        return dict(view.read(index, truth=truth))
    except DamagedDataError:
        raise  # already one line naming the sample and the array
    except Exception as exc:  # a corrupt chunk raises a codec error of any type
        reason = (str(exc).splitlines() or [""])[0]
        raise ValueError(
            f"data={str(view.path)!r}: sample {index}: {_unreadable_array(view.path, index)} "
            f"cannot be read ({type(exc).__name__}: {reason}); `simgen verify` lists every "
            "damaged chunk"
        ) from exc


def _unreadable_array(path, index: int) -> str:
    """Name of the first per-sample array whose chunk of sample ``index`` fails to decode."""
    import warnings

    import zarr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # our manifest.json is not a Zarr node
        root = zarr.open_group(str(path), mode="r")
        n = root["complete"].shape[0]
        for name, array in root.arrays():
            if array.ndim and array.shape[0] == n:
                try:
                    array[index]
                except Exception:
                    return f"array {name!r}"
        for group_name, group in root.groups():
            for name, array in group.arrays():
                try:
                    array[index] if array.shape[0] == n else array[:]
                except Exception:
                    return f"array '{group_name}/{name}'"
    return "a chunk"


def _run_one(method, view, position, models_dir, radius, align, dataset_name, truths) -> list[dict]:
    """Predict sample ``position`` of ``view`` once; one record per ground truth."""
    import time

    index = int(view.indices[position])
    sample = _read_sample(view, index, truths[0])
    sample["elements"] = _elements_of(sample)
    t0 = time.perf_counter()
    try:
        prediction = method.predict(sample)
    except Exception as exc:  # named here: from a worker process only the message comes back
        raise WorkFailed(
            f"{method.name} failed on sample {index}: {type(exc).__name__}: {exc}"
        ) from exc
    seconds = time.perf_counter() - t0
    if models_dir is not None:
        from models.io import species_arrays, write_prediction

        probabilities = getattr(prediction, "confidence", None)
        classes = (getattr(prediction, "extra", None) or {}).get("classes")
        if probabilities is not None and np.ndim(probabilities) != 2:
            probabilities = None
        positions, info = prediction.positions, {"sample": index, "method": method.name}
        input_frame = view.attrs.get("input_frame")
        if input_frame:  # imported data: the model file in the frame of the user's input model
            from simgen.importer import to_input_frame

            positions = to_input_frame(positions, input_frame)
            info["frame"] = "input model (origin at the rotation centre)"
        write_prediction(
            Path(models_dir) / f"{index}.xyz",
            positions,
            prediction.elements,
            probabilities,
            classes,
            info,
            species_arrays(getattr(prediction, "extra", None)),
        )
    dose = float(sample.get("dose", np.nan))
    n_angles = len(sample["angles"]) if sample.get("angles") is not None else 0
    records = []
    for truth in truths:
        if truth != truths[0]:
            positions, numbers = view.truth_atoms(index, truth)
            sample = {**sample, "positions": positions, "numbers": numbers}
        metrics = score_sample(prediction, sample, radius=radius, align=align, per_atom=True)
        metrics.update(_bound(sample, view))
        record = {
            "schema_version": SCHEMA_VERSION,
            "dataset": dataset_name,
            "dataset_sha256": str(view.attrs.get("dataset_sha256", "")),
            "index": index,
            "dose": dose,
            "morphology": str(sample.get("morphology", "")),
            "composition": str(sample.get("composition", "")),
            "noise_model": str(sample.get("noise_model", "")),
            "split": str(sample.get("split", "")),
            "truth": truth,
            "total_dose": float(sample.get("total_dose", dose * n_angles)),
            "tilt_scheme": str(sample.get("tilt_scheme", "sequential")),
            "damage_model": str(sample.get("damage_model", "none")),
            "method": method.name,
            "method_version": getattr(method, "version", ""),
            **_options_field(method),
            "align": bool(align),
            "seconds": seconds,
            # steps the method could not run on this sample (e.g. refinement without a dose)
            "skipped_steps": list(
                (getattr(prediction, "extra", None) or {}).get("skipped_steps", [])
            ),
            **metrics,
        }
        records.append(_json_safe(record))
    return records


def _bound(sample, view) -> dict:
    """The isolated-atom Cramér–Rao bound of the sample's true atoms (benchmark.crlb), pm."""
    from benchmark.crlb import crlb_of_sample, rms_by_element

    if sample.get("angles_true") is None or not len(sample.get("positions", ())):
        return {}
    try:
        bound = crlb_of_sample(sample, dict(view.attrs).get("spec") or {})
    except (ValueError, KeyError) as exc:  # e.g. imported data without a dose
        logger.info("no Cramér–Rao bound for sample %s: %s", sample.get("index"), exc)
        return {}
    out = {"crlb_atoms_pm": bound}
    for key, value in rms_by_element(bound, sample["numbers"]).items():
        out["crlb_pm" if key == "all" else f"crlb_pm_{key}"] = value
    out.update(_recovery_bound(sample, view))
    return out


def _recovery_bound(sample, view) -> dict:
    """The detection limit of the sample's true atoms (benchmark.detection): ``recovery_bound``
    (fraction) overall and per element, the optimal test's recovery at a 1% false-alarm rate."""
    from ase.data import chemical_symbols

    from benchmark.detection import detectability_of_sample, detection_probability

    d_prime = detectability_of_sample(sample, dict(view.attrs).get("spec") or {})
    probability = detection_probability(d_prime)
    numbers = np.asarray(sample["numbers"], dtype=int)
    out = {"recovery_bound": float(probability.mean())}
    for z in np.unique(numbers):
        out[f"recovery_bound_{chemical_symbols[int(z)]}"] = float(probability[numbers == z].mean())
    return out


def _options_field(method) -> dict:
    """``{"method_options": {...}}``: the options :func:`get_method` was given, beyond the
    weights and model files (so two runs of one method with different options stay
    distinguishable); nothing for the defaults."""
    options = {
        k: v
        for k, v in (getattr(method, "given_options", None) or {}).items()
        if k not in ("weights", "model_file")
    }
    return {"method_options": options} if options else {}


def run_method(
    method_name: str,
    store,
    out,
    *,
    models_dir=None,
    split: str | None = "test",
    limit: int | None = None,
    limit_per: str | None = None,
    workers: int = 1,
    radius: float = 1.0,
    align: bool = False,
    options: dict | None = None,
    progress: bool | None = None,
    truth: str | tuple[str, ...] = "initial",
    overwrite: bool = False,
    params: tuple[str, str] = ("out", "models_dir"),
) -> list[dict]:
    """Run ``method_name`` on the complete samples of ``store`` and write ``out`` (JSON lines).

    Parameters
    ----------
    split
        Only samples of this split (``None``: all). A split the store does not have is an error
        that lists the store's splits.
    limit
        Run on at most this many samples (the first ones of the view), or with ``limit_per``
        at most this many per value of that meta field.
    limit_per
        A ``/meta`` field (e.g. ``"dose"``): ``limit`` applies to each of its values, so a slice
        of a dose sweep covers every dose.
    workers
        Processes; each builds its own method instance and uses one torch thread.
    radius
        Matching radius in Å.
    truth
        Ground truth of damaged samples: ``"initial"``, ``"final"``, ``"mean"`` or several of them
        (one record per sample and truth, the method runs once per sample). Samples without damage
        events score the same against all three.
    overwrite
        Replace an existing results file (and ``models_dir``) written by this project; other
        existing paths are refused before any work (:mod:`simgen.tools.outputs`). Both are written
        atomically.
    params
        Names of ``out`` and ``models_dir`` in error messages (the CLI's ``--out``, ``--models``).
    """
    from benchmark.methods import get_method
    from simgen.store import open_dataset
    from simgen.tools.outputs import check_output, hold_lock

    if workers < 1:
        raise ValueError(f"workers={workers}: expected a positive integer")
    check_output(out, "results", overwrite=overwrite, param=params[0])
    if models_dir is not None:
        check_output(models_dir, "predictions", overwrite=overwrite, param=params[1])
    truths = _truths(truth)
    method = get_method(method_name, **(options or {}))  # fail fast on unknown names/options
    ds = open_dataset(store)
    dataset_name = str(getattr(ds, "name", Path(store).name))
    if split:
        splits = sorted({str(v) for v in ds.meta("split")}) if "split" in ds.fields else []
        if split not in splits:
            raise ValueError(
                f"split={split!r}: not a split of {str(store)!r} "
                f"(it has: {', '.join(splits) or 'no splits'}; 'all' for every sample)"
            )
    view = ds.filter(split=split) if split else ds
    if len(view) == 0:
        raise ValueError(f"data={str(store)!r}: no complete samples")
    if limit is not None and limit < 1:
        raise ValueError(f"limit={limit}: expected a positive integer")
    positions = _positions(view, limit, limit_per)
    if "n_atoms" in ds.fields:
        chosen = view.indices[positions]
        no_truth = [int(i) for i in chosen[view.meta("n_atoms")[positions] == 0]]
        if no_truth:
            raise ValueError(
                f"data={str(store)!r}: sample(s) {no_truth[:10]} have no ground-truth atoms "
                "(imported without --truth?); scoring needs a truth: use `pann predict` to "
                "predict without scoring"
            )
    check_samples = getattr(method, "check_samples", None)
    if check_samples is not None:  # e.g. the files method: every sample has a file
        check_samples([int(i) for i in view.indices[positions]])
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.ExitStack() as stack:
        # One writer per results file: a second `aet-bench run` on the same --out is refused
        # (both claiming success while one's records vanish is the failure this prevents).
        stack.enter_context(hold_lock(_sibling_path(out, "lock"), f"{params[0]}={str(out)!r}"))
        check_output(out, "results", overwrite=overwrite, param=params[0])
        # Finished samples are appended to a partial file as they complete; an interrupted run
        # with the same parameters continues from it. With --models the prediction files are
        # staged in a kept folder beside it (swapped in whole at the end), so they resume too.
        partial = _sibling_path(out, "partial")
        resume_key = {
            "method": method_name,
            "options": _json_safe(options or {}),
            "store": str(Path(store).resolve()),
            "dataset_sha256": str(ds.attrs.get("dataset_sha256", "")),
            "split": split,
            "positions": [int(i) for i in positions],
            "radius": radius,
            "align": align,
            "truths": list(truths),
        }
        done = _resume_partial(partial, resume_key)
        final_models = models_dir
        if models_dir is not None:  # written beside, swapped in when every sample is done
            staging = _staging_for(Path(final_models), resume_key, params[1])
            # a sample resumes only if its prediction file was written (atomically) before the stop
            done = {
                p: r for p, r in done.items() if (staging / f"{view.indices[p]}.xyz").is_file()
            }
            models_dir = str(
                stack.enter_context(
                    staged_output(
                        final_models,
                        "predictions",
                        overwrite=overwrite,
                        param=params[1],
                        command="aet-bench run",
                        keep=staging,
                    )
                )
            )
        try:
            records = _run_all(
                method,
                method_name,
                options,
                store,
                view,
                positions,
                split,
                models_dir,
                radius,
                align,
                dataset_name,
                truths,
                workers,
                progress,
                done=done,
                sink=_PartialWriter(partial, resume_key, done),
            )
        except WorkFailed as exc:
            kept = max(0, len(partial.read_text().splitlines()) - 1) if partial.exists() else 0
            raise WorkFailed(
                f"{exc}; {kept} finished sample(s) kept: the same command continues from them "
                "(--debug for the traceback)"
            ) from exc
        if models_dir is not None:
            (Path(models_dir) / _STAGING_KEY).unlink()  # not part of the output
        write_text_atomic(out, "".join(json.dumps(record) + "\n" for record in records))
        partial.unlink(missing_ok=True)
    return records


#: The resume key of a kept ``--models`` staging folder, inside it (removed before the swap).
_STAGING_KEY = ".resume_key.json"


def _staging_for(models: Path, resume_key: dict, param: str) -> Path:
    """The kept staging folder of ``--models`` (``.NAME.partial`` beside it), ready for this run.

    Reused when it holds the same run's resume key; emptied when it holds another run's (it is
    ours); refused, naming it, when it holds anything else.
    """
    staging = models.parent / f".{models.name}.partial"
    key = json.dumps(resume_key, sort_keys=True)
    if staging.is_dir():
        try:
            theirs = (staging / _STAGING_KEY).read_text()
        except (OSError, UnicodeDecodeError):
            theirs = None
        if theirs is None:
            raise ValueError(
                f"{param}={str(models)!r}: {str(staging)!r} exists and was not written by "
                "aet-bench run (no resume key); move it away"
            )
        if theirs == key:
            return staging
        shutil.rmtree(staging)  # another run's staging folder
    elif staging.exists():
        raise ValueError(
            f"{param}={str(models)!r}: {str(staging)!r} exists and is not a folder; move it away"
        )
    models.parent.mkdir(parents=True, exist_ok=True)
    staging.mkdir()
    write_text_atomic(staging / _STAGING_KEY, key)
    return staging


def _sibling_path(out: Path, tag: str) -> Path:
    return out.parent / f".{out.name}.{tag}"


def _resume_partial(partial: Path, resume_key: dict) -> dict[int, list[dict]]:
    """Records of finished samples of an interrupted run with the same parameters, by position."""
    try:
        lines = partial.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return {}
    try:
        header = json.loads(lines[0]) if lines else {}
    except ValueError:
        header = {}
    if header.get("resume_key") != json.loads(json.dumps(resume_key)):
        partial.unlink(missing_ok=True)  # ours, from another run: start again
        return {}
    done: dict[int, list[dict]] = {}
    for line in lines[1:]:
        try:
            entry = json.loads(line)
            done[int(entry["position"])] = list(entry["records"])
        except (ValueError, KeyError, TypeError):
            break  # a line cut short by the interrupt: that sample runs again
    if done:
        logger.warning("%s: resuming, %d samples already done", partial, len(done))
    return done


class _PartialWriter:
    """Appends each finished sample's records to the partial file (flushed and synced)."""

    def __init__(self, partial: Path, resume_key: dict, done: dict) -> None:
        self.partial = partial
        if not done or not partial.exists():
            partial.write_text(json.dumps({"resume_key": resume_key}) + "\n")
        self.handle = None

    def __call__(self, position: int, records: list[dict]) -> None:
        if self.handle is None:
            self.handle = open(self.partial, "a", encoding="utf-8")  # noqa: SIM115
        self.handle.write(json.dumps({"position": position, "records": records}) + "\n")
        self.handle.flush()
        os.fsync(self.handle.fileno())

    def __del__(self):
        if self.handle is not None:
            self.handle.close()


def _positions(view, limit: int | None, limit_per: str | None) -> list[int]:
    """Positions in ``view`` to run on: all, the first ``limit``, or ``limit`` per ``limit_per``."""
    if limit is None:
        return list(range(len(view)))
    if limit_per is None:
        return list(range(min(limit, len(view))))
    values = view.meta(limit_per)  # a one-line error for a field the store lacks
    taken: dict = {}
    positions = []
    for position, value in enumerate(values.tolist()):
        if taken.get(value, 0) < limit:
            taken[value] = taken.get(value, 0) + 1
            positions.append(position)
    return positions


def _run_all(
    method,
    method_name,
    options,
    store,
    view,
    positions,
    split,
    models_dir,
    radius,
    align,
    dataset_name,
    truths,
    workers,
    progress,
    done=None,
    sink=None,
) -> list[dict]:
    done = done or {}
    records = [r for position in sorted(done) for r in done[position]]
    todo = [i for i in positions if i not in done]
    bar_desc = f"{method_name} on {dataset_name}"
    if workers == 1:
        for i in progress_bar(todo, desc=bar_desc, unit="sample", enabled=progress):
            sample_records = _run_one(
                method, view, i, models_dir, radius, align, dataset_name, truths
            )
            if sink is not None:
                sink(i, sample_records)
            records += sample_records
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        jobs = [
            (str(store), split, i, models_dir, radius, align, dataset_name, truths) for i in todo
        ]
        with ProcessPoolExecutor(
            workers,
            mp_context=mp.get_context("spawn"),
            initializer=_worker_init,
            initargs=(method_name, options),
        ) as pool:
            for i, sample_records in zip(
                todo,
                progress_bar(
                    pool.map(_process, jobs),
                    total=len(todo),
                    desc=bar_desc,
                    unit="sample",
                    enabled=progress,
                ),
            ):
                if sink is not None:
                    sink(i, sample_records)
                records += sample_records
    records.sort(key=lambda r: (r["index"], truths.index(r["truth"])))
    return records


def read_results(paths) -> list[dict]:
    """All records of one or more JSONL result files (the same file twice is an error).

    Each line must be an ``aet-bench run`` record: a JSON object with a ``method`` name, a
    numeric ``dose`` and numeric (or null) metrics.
    """
    records = []
    seen: dict[Path, str] = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"results={str(path)!r}: no such file")
        resolved = path.resolve()
        if resolved in seen:
            raise ValueError(
                f"results={str(path)!r}: given twice (also as {seen[resolved]!r}); "
                "its records would be counted twice"
            )
        seen[resolved] = str(path)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"results={str(path)!r} line {n}: not JSON ({exc.msg})") from None
            where = f"results={str(path)!r} line {n}"
            validate_record(record, where)
            _check_record(record, where)
            records.append(with_aet_errors(record))
    return records


def with_aet_errors(record: dict) -> dict:
    """``record`` with the AET-convention errors (``coordinate_error_aet_pm`` and
    ``coordinate_error_aet_pm_<El>``) filled in from its per-atom ``matches`` where a record
    written before those keys existed lacks them; unchanged otherwise (and without matches the
    missing keys stay missing: tables show "–", never the raw error in their place)."""
    matches = record.get("matches")
    missing = "coordinate_error_aet_pm" not in record or not any(
        k.startswith("coordinate_error_aet_pm_") for k in record
    )
    if not missing or not isinstance(matches, dict) or "displacement_pm" not in matches:
        return record
    displacement = np.asarray(matches["displacement_pm"], dtype=float).reshape(-1, 3)
    elements = np.asarray(matches.get("element", ["unknown"] * len(displacement)), dtype=str)
    if len(displacement) == 0 or len(elements) != len(displacement):
        return record
    centred = displacement - displacement.mean(axis=0)
    out = dict(record)
    out.setdefault("coordinate_error_aet_pm", float(np.sqrt(np.mean((centred**2).sum(axis=1)))))
    for element in sorted(set(elements.tolist())):
        of_element = centred[elements == element]
        out.setdefault(
            f"coordinate_error_aet_pm_{element}",
            float(np.sqrt(np.mean((of_element**2).sum(axis=1)))),
        )
    return out


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_record(record, where: str) -> None:
    """A one-line error unless ``record`` looks like a record of :func:`run_method`."""
    expected = "expected a JSON object of `aet-bench run` with method, dose and metrics"
    if not isinstance(record, dict):
        raise ValueError(f"{where}: {type(record).__name__}, {expected}")
    missing = [k for k in ("method", "dose") if k not in record]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}; {expected}")
    if not isinstance(record["method"], str):
        raise ValueError(f"{where}: method={record['method']!r}; {expected}")
    bad = [
        k
        for k in ("dose", *METRIC_KEYS)
        if k in record and record[k] is not None and not _is_number(record[k])
    ]
    if bad:
        raise ValueError(f"{where}: {bad[0]}={record[bad[0]]!r} is not a number; {expected}")
    # The results schema: rates are fractions, errors and doses finite and non-negative.
    if record["dose"] is not None and (not math.isfinite(record["dose"]) or record["dose"] < 0):
        raise ValueError(f"{where}: dose={record['dose']!r}: expected a finite dose >= 0 (e/Å²)")
    for key, is_error in METRIC_KEYS.items():
        value = record.get(key)
        if value is None:
            continue
        if is_error and (not math.isfinite(value) or value < 0):
            raise ValueError(f"{where}: {key}={value!r}: expected a finite error >= 0 (pm)")
        if not is_error and not 0.0 <= value <= 1.0:
            raise ValueError(f"{where}: {key}={value!r}: expected a fraction in [0, 1]")
