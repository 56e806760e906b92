"""The main job (``make demo``): generate ``demo``, run every method, write a leaderboard and figures.

    python -m benchmark.demo --out demo-output [--limit N] [--workers N] [--eval-workers N]

Steps: generate the ``demo`` dataset on a local Dask cluster (resumes if interrupted); run
``classical``, ``unet3d`` and ``pann`` (shipped weights) on its test split, each over one process
per core (``--eval-workers``); write the leaderboard
(Markdown + HTML), a per-dose figure, and preview images of one test sample (projections, volume,
refined volume, traced atoms coloured by predicted element).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["main", "sample_figure"]

METHODS = ("classical", "unet3d", "pann")


def sample_figure(sample: dict, refined: np.ndarray, prediction, out) -> Path:
    """Projections, volume, PANN-refined volume and predicted atoms of one sample, in one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ase.data import chemical_symbols

    series, angles = sample["tilt_series"], np.asarray(sample["angles"])
    picks = [0, len(angles) // 2, len(angles) - 1]
    s = float(sample["sampling"])
    volume, target = sample["volume"], sample["target"]
    fig, axes = plt.subplots(2, 4, figsize=(15, 7.6))
    for ax, k in zip(axes[0, :3], picks):
        ax.imshow(series[k], cmap="gray")
        ax.set_title(
            f"projection {angles[k]:+.0f}° (counts, dose {float(sample['dose']):.3g} e/Å²)",
            fontsize=9,
        )
    extent = [0, volume.shape[2] * s, volume.shape[0] * s, 0]
    axes[0, 3].imshow(target.sum(axis=1), cmap="magma", extent=extent)
    axes[0, 3].set_title("ideal volume (target), projected along y", fontsize=9)
    axes[1, 0].imshow(volume.sum(axis=1), cmap="magma", extent=extent)
    axes[1, 0].set_title(
        "SIRT reconstruction, projected along y\n(missing wedge elongates along z)", fontsize=9
    )
    axes[1, 1].imshow(refined.sum(axis=1), cmap="magma", extent=extent)
    axes[1, 1].set_title("PANN stage 1 (refined), projected along y", fontsize=9)
    true_el = [chemical_symbols[int(z)] for z in sample["numbers"]]
    elements = sorted(set(true_el) | set(prediction.elements))
    colours = dict(zip(elements, plt.cm.tab10.colors))
    for ax, (pos, el, title) in zip(
        axes[1, 2:],
        [
            (np.asarray(sample["positions"]), true_el, "true atoms (x–z)"),
            (
                np.asarray(prediction.positions),
                prediction.elements,
                "PANN atoms, coloured by predicted element",
            ),
        ],
    ):
        for e in elements:
            sel = np.array([x == e for x in el], dtype=bool)
            if sel.any():
                ax.scatter(
                    pos[sel, 0], pos[sel, 2], s=9, color=colours[e], label=f"{e} ({sel.sum()})"
                )
        ax.set_xlim(extent[0], extent[1])
        ax.set_ylim(extent[2], extent[3])
        ax.set_aspect("equal")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=8, loc="upper right", frameon=False)
    for ax in axes[1]:
        ax.set_xlabel("x (Å)")
    axes[1, 0].set_ylabel("z (Å)")
    for ax in axes[0, :3]:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(
        f"sample {int(sample['index'])}: {sample.get('morphology', '')} {sample.get('composition', '')}, "
        f"{len(true_el)} atoms, sampling {s} Å"
    )
    fig.tight_layout()
    from simgen.tools.outputs import atomic_path

    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(out)


def _cpus() -> int:
    import os

    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def main(argv=None) -> int:
    """``make demo``: a failing sample stops it with one line naming it (what was done is kept:
    the same command continues)."""
    from simgen.tools.errors import EXIT_WORK_FAILED, WorkFailed

    try:
        return _main(argv)
    except WorkFailed as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return EXIT_WORK_FAILED


def _main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmark.demo", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", default="demo-output")
    parser.add_argument("--config", default=None)
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--limit", type=int, help="generate only the first N samples")
    parser.add_argument(
        "--workers", type=int, help="Dask workers for generation (default: one per core)"
    )
    parser.add_argument(
        "--eval-workers",
        type=int,
        help="processes that run each method over the test samples (default: one per core)",
    )
    parser.add_argument("--methods", default=",".join(METHODS))
    args = parser.parse_args(argv)
    if args.eval_workers is not None and args.eval_workers < 1:
        parser.error(f"--eval-workers={args.eval_workers}: expected a positive integer")
    eval_workers = args.eval_workers or _cpus()
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from simgen.cli import quiet_dask_logging

    quiet_dask_logging()

    from benchmark.leaderboard import aggregate, plot_against_dose, write_leaderboard
    from benchmark.runner import run_method
    from simgen.catalog import get_dataset
    from simgen.engine import generate
    from simgen.preview import preview
    from simgen.store import open_dataset
    from simgen.tools.outputs import check_output, write_marker

    t0 = time.perf_counter()
    out = Path(args.out)
    check_output(out, "demo", resume=True)  # new, empty, or an earlier demo (resumed)
    spec = get_dataset(args.dataset, args.config)
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, "demo", "python -m benchmark.demo")
    store = out / f"{args.dataset}.zarr"
    print(
        f"[1/4] generating {args.dataset!r} into {store} ({spec.n_samples if args.limit is None else args.limit} samples)"
    )
    report = generate(spec, store, workers=args.workers, limit=args.limit)
    print("      " + report.summary().replace("\n", "\n      "))
    print(f"      ({(time.perf_counter() - t0) / 60:.1f} min so far)")

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    records = []
    for k, method in enumerate(methods, 1):
        print(f"[2/4] running {method} on the test split ({k}/{len(methods)})")
        records += run_method(
            method,
            store,
            out / f"results_{method}.jsonl",
            models_dir=out / "models" / method,
            split="test",
            workers=eval_workers,  # the samples spread over one process per core
            overwrite=True,  # the demo's own outputs, recomputed from its (resumed) store
        )
        print(f"      ({(time.perf_counter() - t0) / 60:.1f} min so far)")

    print("[3/4] leaderboard and per-dose figure")
    paths = write_leaderboard(
        records,
        out / "leaderboard",
        title=f"{args.dataset} test split (held-out particles)",
        overwrite=True,
    )
    plot_against_dose(
        aggregate(records),
        out / "dose_sweep.png",
        title=f"{args.dataset} test split: metrics against dose",
        metrics=("recovery_rate_species", "coordinate_error_aet_pm", "species_accuracy"),
    )

    print("[4/4] preview images of one test sample")
    ds = open_dataset(store).filter(split="test")
    sample = ds[0]
    preview(store, int(sample["index"]), out / "preview_sample.png")
    if "pann" in methods:
        from benchmark.methods import get_method

        pann = get_method("pann")
        model = pann.model
        from ase.data import chemical_symbols

        elements = sorted({chemical_symbols[int(z)] for z in np.unique(sample["numbers"])})
        prediction = model.predict(sample["volume"], float(sample["sampling"]), elements)
        sample_figure(sample, prediction.refined, prediction, out / "pann_sample.png")

    minutes = (time.perf_counter() - t0) / 60
    print()
    print(Path(paths["md"]).read_text())
    print(f"Done in {minutes:.1f} min. Outputs in {out}/:")
    print(f"  leaderboard      {paths['md']}  {paths['html']}  {paths['csv']}")
    print(f"  per-dose figure  {out / 'dose_sweep.png'}   leaderboard plot {paths['png']}")
    print(f"  sample previews  {out / 'preview_sample.png'}  {out / 'pann_sample.png'}")
    print(
        f"  predicted models {out / 'models'}/<method>/<index>.xyz   results {out}/results_<method>.jsonl"
    )
    print(f"  dataset          {store}   (simgen inspect {store}; simgen verify {store})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
