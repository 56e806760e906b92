"""Distributed, resumable, verifiable generation of a dataset into a Zarr store.

``generate(spec, out)`` maps the samples of ``spec.plan()`` over a ``dask.distributed`` cluster
(a ``LocalCluster`` of single-threaded worker processes by default, or any running scheduler).
Each task simulates one sample with its own generator (``SeedSequence(seed, spawn_key=(i,))``)
and writes it straight into its own chunks of the store; the driver only receives a few numbers
back. So the store is the same whatever the number of workers or the order they finish in.

Resumable: samples whose ``complete`` flag is set are skipped, and a sample interrupted
anywhere (even by SIGKILL) has no flag and is simply rewritten. A sample that raises is retried
(``retries``), then recorded in ``/failed`` and in the report. A lock file
(``STORE/.generate.lock``, created with ``O_EXCL``, holding pid and host) stops a second
``generate`` on the same store; a lock left by a dead process on this host is taken over.

Worker processes are started with ``spawn``: a script that calls :func:`generate` must do so
under ``if __name__ == "__main__":`` (as for any ``dask.distributed.LocalCluster``).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from simgen.store.schema import LOCK_NAME
from simgen.tools.outputs import _pid_alive

__all__ = [
    "generate",
    "GenerationReport",
    "StoreLockedError",
    "acquire_lock",
    "open_or_create_store",
    "release_lock",
]

logger = logging.getLogger(__name__)


class StoreLockedError(FileExistsError):
    """Another process is generating into the same store."""


@dataclass
class GenerationReport:
    """What a :func:`generate` call did (counts refer to the requested samples)."""

    dataset: str
    store: str
    n_planned: int
    n_requested: int
    n_skipped: int = 0
    n_written: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 0
    dataset_sha256: str = ""
    sample_seconds: list[float] = field(default_factory=list)

    @property
    def n_complete(self) -> int:
        return self.n_skipped + self.n_written

    @property
    def samples_per_hour(self) -> float:
        return 3600.0 * self.n_written / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        lines = [
            f"dataset {self.dataset!r} -> {self.store}",
            f"samples: {self.n_requested} requested of {self.n_planned} planned; {self.n_written} written, "
            f"{self.n_skipped} already complete, {len(self.failed)} failed",
            f"time: {self.seconds:.1f} s on {self.workers} worker(s)"
            + (f" ({self.samples_per_hour:.0f} samples/hour)" if self.n_written else ""),
        ]
        for index, reason in self.failed[:20]:
            lines.append(f"  failed sample {index}: {reason}")
        if len(self.failed) > 20:
            lines.append(f"  ... and {len(self.failed) - 20} more")
        if self.dataset_sha256:
            lines.append(f"dataset sha256: {self.dataset_sha256}")
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# Lock


def acquire_lock(store: str | Path) -> Path:
    """Create ``STORE/.generate.lock`` exclusively; take over a stale lock of a dead local pid.

    Raises
    ------
    StoreLockedError
        If a live process (or one on another host) holds the lock.
    """
    store = Path(store)
    store.mkdir(parents=True, exist_ok=True)
    lock = store / LOCK_NAME
    me = {"pid": os.getpid(), "host": socket.gethostname(), "time": time.time()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text() or "{}")
            except (OSError, ValueError):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and host == me["host"] and not _pid_alive(pid):
                logger.warning("%s: removing stale lock of dead process %d", lock, pid)
                lock.unlink(missing_ok=True)
                continue
            if not holder:  # being written right now by another process
                time.sleep(0.2)
                continue
            raise StoreLockedError(
                f"store={str(store)!r}: another generate is running (pid {pid} on {host}, lock {lock}); "
                "wait for it, or delete the lock file if that process is gone"
            ) from None
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        return lock
    raise StoreLockedError(f"store={str(store)!r}: could not acquire {lock}")


def release_lock(lock: Path) -> None:
    """Remove the lock if this process holds it."""
    try:
        holder = json.loads(Path(lock).read_text())
    except (OSError, ValueError):
        return
    if holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        Path(lock).unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------
# The task that runs on a worker


def _run_sample(
    store: str, sample_spec, dataset_seed: int, retries: int
) -> tuple[int, str, float, int]:
    """Simulate sample ``sample_spec.index`` and write it; return (index, error or "", s, atoms)."""
    import dask

    from simgen.catalog.planning import sample_rng
    from simgen.sample import simulate_sample
    from simgen.store import write_sample

    index = int(sample_spec.index)
    error = ""
    for attempt in range(retries + 1):
        start = time.perf_counter()
        try:
            # A fresh generator per attempt: a retried sample is the same sample.
            rng = sample_rng(dataset_seed, index)
            with dask.config.set(scheduler="synchronous"):
                sample = simulate_sample(sample_spec, rng)
            write_sample(store, index, sample)
            return index, "", time.perf_counter() - start, len(sample.atoms)
        except Exception as exc:  # any failure of one sample is recorded, not fatal
            error = f"{type(exc).__name__}: {exc}"
            logger.warning(
                "sample %d failed (attempt %d of %d): %s", index, attempt + 1, retries + 1, error
            )
    return index, error, 0.0, 0


# --------------------------------------------------------------------------------------------
# Driver


def _plan_meta(rows: Sequence[dict]) -> dict[str, list]:
    fields = (
        "index",
        "morphology",
        "composition",
        "size_nm",
        "dose",
        "noise_model",
        "split",
        "seed",
        "replica",
        "particle",
        "thermal_sigma",
        "vacancy_fraction",
        "orientation",
    )
    meta = {f: [r[f] for r in rows] for f in fields}
    meta["structure_seed"] = [
        -1 if r["structure_seed"] is None else int(r["structure_seed"]) for r in rows
    ]
    meta["noise"] = [";".join(map(str, r["noise"])) for r in rows]
    # The chemical order each particle gets: an ordered phase (L1₀, L1₂) on a twinned particle is
    # made as a random alloy, and the store says so next to the composition asked for.
    from simgen.structures import realised_ordering

    # once per distinct (morphology, composition): 42,588 rows share a few dozen of them, and
    # parsing a composition every row was most of the store set-up
    ordering: dict = {}

    def realised(morphology, composition):
        try:
            key = (morphology, composition)
            if key not in ordering:
                ordering[key] = realised_ordering(morphology, composition)
            return ordering[key]
        except TypeError:  # an unhashable composition (a mapping): parse it every time
            return realised_ordering(morphology, composition)

    meta["ordering"] = [realised(r["morphology"], r["composition"]) for r in rows]
    return meta


def open_or_create_store(spec, out: Path, rows: list[dict], overwrite: bool):
    """The dataset's store at ``out``: opened when it holds the same spec, else created empty.

    Parameters
    ----------
    spec
        The resolved dataset spec.
    out
        Store path.
    rows
        The planned samples (:meth:`DatasetSpec.plan_rows`).
    overwrite
        Replace a store of this project that holds another spec.
    """
    import zarr

    from simgen.catalog.dataset_spec import spec_dict
    from simgen.store import StoreLayout, create_store

    resolved = spec_dict(spec)
    if (out / "zarr.json").is_file() and not overwrite:
        root = zarr.open_group(str(out), mode="r+")
        # Everything but the description must match: the samples are a function of the rest.
        stored = {k: v for k, v in root.attrs.get("spec", {}).items() if k != "description"}
        wanted = {k: v for k, v in json.loads(json.dumps(resolved)).items() if k != "description"}
        if json.loads(json.dumps(stored)) != wanted:
            raise ValueError(
                f"out={str(out)!r}: holds dataset {root.attrs.get('dataset')!r} generated from a different spec; "
                "use another --out (this store stays as it is)"
            )
        if root["complete"].shape[0] != len(rows):
            raise ValueError(
                f"out={str(out)!r}: holds {root['complete'].shape[0]} samples, the plan has {len(rows)}"
            )
        return root
    layout = StoreLayout(len(rows), n_angles=spec.n_angles, size=spec.size, sampling=spec.sampling)
    return create_store(
        out, spec, layout, meta=_plan_meta(rows), storage=spec.storage, overwrite=overwrite
    )


def generate(
    spec,
    out: str | Path,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    limit: int | None = None,
    progress: bool | None = None,
    retries: int = 1,
    overwrite: bool = False,
    plan: Sequence | None = None,
    indices: Sequence[int] | None = None,
) -> GenerationReport:
    """Generate the samples of a dataset into a Zarr store (resumable, deterministic).

    Parameters
    ----------
    spec
        A :class:`simgen.catalog.DatasetSpec`.
    out
        Store directory. Created if missing; an existing store of the same spec is resumed.
    workers
        Local worker processes (one thread each); default: one per CPU core.
    scheduler
        Address of a running Dask scheduler (``tcp://host:8786``), or ``"synchronous"`` to run
        in this process without Dask (debugging). Workers must see ``out`` on a shared
        filesystem.
    limit
        Generate only the first ``limit`` samples of the plan (the store still holds the whole
        plan, so a later call without ``limit`` completes it).
    progress
        Show a progress bar with rate and ETA (default: :func:`simgen.tools.progress.progress_enabled`).
    retries
        Extra attempts for a sample that raises before it is recorded as failed.
    overwrite
        Start again from an empty store.
    plan
        Replace ``spec.plan()`` (same length, same order); for tests and custom subsets.
    indices
        Generate only these sample indices of the plan (e.g. a few samples of every dose of a
        sweep); combined with ``limit``, the first ``limit`` of them.

    Returns
    -------
    GenerationReport
        ``report.failed`` lists (index, reason) of samples that could not be generated.
    """
    import zarr

    from simgen.store import consolidate, read_samples
    from simgen.tools.progress import progress_bar

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"limit={limit!r}: expected a positive integer")
    if workers is not None and (
        isinstance(workers, bool) or not isinstance(workers, int) or workers < 1
    ):
        raise ValueError(f"workers={workers!r}: expected a positive integer")
    if retries < 0:
        raise ValueError(f"retries={retries!r}: expected >= 0")
    from simgen.tools.outputs import check_output

    out = Path(out)
    # A new or empty folder, or a store of this project to resume: never a user's folder.
    check_output(out, "store", resume=True, param="out")
    t0 = time.perf_counter()
    rows = spec.plan_rows()
    sample_specs = list(plan) if plan is not None else spec.plan(rows=rows)
    if len(sample_specs) != len(rows):
        raise ValueError(
            f"plan: {len(sample_specs)} samples, expected {len(rows)} (the spec's plan)"
        )
    if indices is not None:
        chosen = sorted({int(i) for i in indices})
        if any(i < 0 or i >= len(rows) for i in chosen):
            raise ValueError(
                f"indices={list(indices)!r}: expected sample indices in 0..{len(rows) - 1}"
            )
        requested = chosen[:limit] if limit is not None else chosen
    else:
        requested = range(min(limit, len(rows)) if limit is not None else len(rows))

    lock = acquire_lock(out)
    report = GenerationReport(
        dataset=spec.name, store=str(out), n_planned=len(rows), n_requested=len(requested)
    )
    try:
        root = open_or_create_store(spec, out, rows, overwrite)
        complete = np.asarray(read_samples(root["complete"]), dtype=bool)
        todo = [i for i in requested if not complete[i]]
        report.n_skipped = len(requested) - len(todo)
        logger.info(
            "%s: %d samples to generate, %d already complete", out, len(todo), report.n_skipped
        )
        results: list[tuple[int, str, float, int]] = []
        if todo:
            results = _execute(
                [sample_specs[i] for i in todo],
                str(out),
                spec.seed,
                workers,
                scheduler,
                retries,
                report,
                lambda total: progress_bar(
                    total=total, desc=f"generate {spec.name}", unit="sample", enabled=progress
                ),
            )
        failed_array = root["failed"]
        reasons = np.asarray(failed_array[:]).astype(object)
        for index, error, seconds, _ in results:
            reasons[index] = error
            if error:
                report.failed.append((index, error))
            else:
                report.n_written += 1
                report.sample_seconds.append(seconds)
        # Tasks lost with their worker (never returned) are failures too.
        returned = {r[0] for r in results}
        for index in todo:
            if index not in returned:
                reasons[index] = reasons[index] or "lost: the worker died"
                report.failed.append((index, reasons[index]))
        failed_array[:] = np.array([str(r) for r in reasons])
        report.failed.sort()
        manifest = consolidate(out)
        report.dataset_sha256 = (
            manifest["dataset_sha256"] if manifest["n_complete"] == len(rows) else ""
        )
        report.seconds = time.perf_counter() - t0
        root = zarr.open_group(str(out), mode="r+")  # consolidate() changed the attributes
        runs = list(root.attrs.get("runs", []))
        runs.append(
            {
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "host": socket.gethostname(),
                "workers": report.workers,
                "scheduler": scheduler or "LocalCluster",
                "limit": limit,
                "written": report.n_written,
                "failed": len(report.failed),
                "seconds": round(report.seconds, 2),
            }
        )
        root.attrs["runs"] = runs
    finally:
        release_lock(lock)
    if report.failed:
        logger.warning(
            "%d of %d samples failed; see the report or `simgen inspect %s`",
            len(report.failed),
            len(requested),
            out,
        )
    return report


def _execute(specs, store, seed, workers, scheduler, retries, report, make_bar):
    """Run the tasks; return the (index, error, seconds, n_atoms) of every task that returned."""
    results = []
    if scheduler == "synchronous":
        report.workers = 1
        with make_bar(len(specs)) as bar:
            for sample_spec in specs:
                results.append(_run_sample(store, sample_spec, seed, retries))
                bar.update(1)
        return results

    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler:
        client = Client(scheduler)
    else:
        n_workers = workers or os.cpu_count() or 1
        cluster = LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
            env={"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        )
        client = Client(cluster)
    try:
        report.workers = len(client.scheduler_info().get("workers", {})) or (workers or 1)
        futures = [
            client.submit(
                _run_sample,
                store,
                s,
                seed,
                retries,
                key=f"sample-{int(s.index)}-{os.getpid()}",
                pure=False,
            )
            for s in specs
        ]
        with make_bar(len(futures)) as bar:
            for future in as_completed(futures):
                try:
                    results.append(future.result())
                except Exception as exc:  # e.g. KilledWorker: the task's process died
                    index = int(str(future.key).split("-")[1])
                    results.append((index, f"{type(exc).__name__}: {exc}", 0.0, 0))
                bar.update(1)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
    return results
