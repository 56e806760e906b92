"""Validate the classical pipeline on a published AET benchmark with ground truth.

Imports both tilt series of the amorphous-Si benchmark of Liao et al. ("Methods for accurate
determination of the 3D atomic structure of amorphous materials", folder NP1_aSi_D2nm, copied to
``$AET_EXTERNAL/paet_asi2nm``, see docs/external-data.md), reconstructs them (SIRT), runs the ``classical`` method and
scores it against the 208-atom ground truth as the authors did (match radius 0.9 Å after centring
and mean-shift alignment; RMSD = sqrt(sum of per-axis variances)). Prints a Markdown table.

Run: ``.venv/bin/python scripts/validate_external.py [--iterations 100] [--out DIR]``
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

EXTERNAL = (
    Path(os.environ["AET_EXTERNAL"])
    if "AET_EXTERNAL" in os.environ
    else Path(__file__).resolve().parents[1].parent / "shared" / "external"
) / "paet_asi2nm"
PUBLISHED = {1.6e5: 4.2, 1.6e4: 17.3}  # pm, BM3D + RESIRE + polynomial tracing
FILES = {1.6e5: "tilt_series_dose1p6e5.mat", 1.6e4: "tilt_series_dose1p6e4.mat"}
SAMPLING = 0.195  # Å per pixel (README of the data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100, help="SIRT iterations")
    parser.add_argument(
        "--out", help="directory for the imported stores (default: a temporary one)"
    )
    parser.add_argument("--radius", type=float, default=0.9, help="match radius (Å)")
    args = parser.parse_args(argv)
    if not EXTERNAL.is_dir():
        raise SystemExit(f"error: {EXTERNAL} not found")

    from benchmark.methods import get_method
    from benchmark.runner import score_sample
    from simgen.importer import import_tilt_series
    from simgen.store import open_dataset

    out_dir = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="paet_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    method = get_method("classical")
    rows = []
    for dose, name in FILES.items():
        t0 = time.perf_counter()
        store = import_tilt_series(
            EXTERNAL / name,
            angles=EXTERNAL / "angles.mat",
            sampling=SAMPLING,
            out=out_dir / f"paet_{dose:.1e}.zarr",
            tilt_axis="x",
            origin=(64, 64),
            truth=EXTERNAL / "ground_truth_208_Si.txt",
            elements=["Si"],
            dose=dose,
            background="auto",
            iterations=args.iterations,
            overwrite=True,  # this script's own stores, re-imported on every run
        )
        t1 = time.perf_counter()
        sample = open_dataset(store)[0]
        prediction = method.predict(sample)
        t2 = time.perf_counter()
        metrics = score_sample(prediction, sample, radius=args.radius, align=True)
        rows.append((dose, metrics, t1 - t0, t2 - t1))

    print(
        f"classical {method.describe()['options']}, SIRT {args.iterations} iterations, radius {args.radius} Å\n"
    )
    print(
        "| dose (e/Å²) | atoms recovered | predicted | precision | RMSD (AET) pm | RMSD pm | published RMSD pm | import+recon s | method s |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for dose, m, t_import, t_method in rows:
        print(
            f"| {dose:.1e} | {m['n_matched']} / {m['n_true']} | {m['n_pred']} | {m['precision']:.3f} | "
            f"{m['coordinate_error_aet_pm']:.2f} | {m['coordinate_error_pm']:.2f} | {PUBLISHED[dose]} | "
            f"{t_import:.0f} | {t_method:.1f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
