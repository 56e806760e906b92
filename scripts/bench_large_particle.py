"""A 20,000-atom particle at experimental scale: simulate, import, run three methods, report.

Simulates a 9–10 nm nanoparticle of about 20,000 atoms (``--kind amorphous``, ``fcc`` or
``core-shell``), 60 projections of ~300² pixels at 0.3–0.4 Å in the linear HAADF mode with
Poisson noise, saves it as a measured tilt series would come (``tilt_series.npy`` or ``.mat``
counts, ``angles.txt``, ``truth.xyz`` with its origin at the image centre), imports it with
``simgen import`` and runs ``aet-bench run`` with ``classical``, ``classical+refine`` and
``pann``. Each step runs as its own process under ``/usr/bin/time``; the table gives its wall
time and peak resident memory (goals of issue #25: peak RSS ≤ 12 GB, classical ≤ 5 min, PANN with
refinement ≤ 30 min) and the recovery rate and coordinate error each method printed.

    python scripts/bench_large_particle.py --out large          # fcc Pt, 8.5 nm, 21,000 atoms
    python scripts/bench_large_particle.py --kind core-shell --out large-cs
    python scripts/bench_large_particle.py --kind amorphous --methods classical --out large-am

Long (tens of minutes): run it in the background with a log; every step shows its progress bar.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

KINDS = {
    # kind: (morphology, composition, options)
    "fcc": ("sphere", "Pt", {}),
    "core-shell": ("sphere", "core-shell:Pd@Pt,shell=2ml", {}),
    "amorphous": ("amorphous", "Pt", {}),
}
METHODS = ("classical", "classical+refine", "pann")


def build(kind: str, size_nm: float, size: int, sampling: float, seed: int):
    """The particle (ase.Atoms) centred in a ``size``³ volume of ``sampling`` Å voxels."""
    from simgen.structures import build_particle, place_in_volume

    morphology, composition, options = KINDS[kind]
    atoms = build_particle(
        morphology,
        composition,
        size_nm,
        rng=np.random.default_rng(seed),
        thermal_sigma=0.05,
        **options,
    )
    return place_in_volume(atoms, size, sampling)


def simulate(atoms, angles, size, sampling, dose, seed):
    """Poisson counts ``(A, P, P)`` float32 of the linear HAADF tilt series at ``dose`` e/Å²."""
    from simgen.physics.imaging import simulate_tilt_series

    clean = simulate_tilt_series(atoms, angles, size=size, sampling=sampling, progress=True)
    rng = np.random.default_rng(seed + 1)
    return rng.poisson(clean.astype(np.float64) * dose).astype(np.float32)


def timed(command: list[str], log: Path) -> dict:
    """Run ``command`` under /usr/bin/time; its wall time (s) and peak RSS (GB)."""
    report = log.with_suffix(".time")
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.call(
            ["/usr/bin/time", "-f", "%M %e", "-o", str(report), *command],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - start
    rss_kb = float(report.read_text().split()[-2]) if report.is_file() else float("nan")
    return {"returncode": code, "wall_s": wall, "peak_rss_gb": rss_kb / 1024**2}


def _scores(results: Path) -> dict:
    if not results.is_file():
        return {}
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    if not rows:
        return {}
    row = rows[0]
    keys = ("recovery_rate", "recovery_rate_element", "coordinate_error_pm", "precision")
    return {k: row.get(k) for k in keys if k in row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", choices=sorted(KINDS), default="fcc")
    parser.add_argument("--size-nm", type=float, default=8.5, help="diameter (nm)")
    parser.add_argument("--pixels", type=int, default=300, help="pixels per side")
    parser.add_argument("--sampling", type=float, default=0.4, help="pixel size (Å)")
    parser.add_argument("--angles", type=int, default=60, help="projections over ±70°")
    parser.add_argument("--dose", type=float, default=1e4, help="e/Å² per projection")
    parser.add_argument("--format", choices=("npy", "mat"), default="npy")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument(
        "--refine-option",
        action="append",
        default=None,
        metavar="KEY=VALUE",
        help="RefineConfig field for classical+refine, repeatable (default iterations=20, "
        "rounds=1, fisher_probes=2: a few tens of likelihood evaluations)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True, help="folder for everything made")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    methods = [m for m in args.methods.split(",") if m]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        parser.error(f"--methods={args.methods!r}: expected a subset of {','.join(METHODS)}")
    args.out.mkdir(parents=True, exist_ok=True)
    bin_dir = Path(sys.executable).parent

    start = time.perf_counter()
    atoms = build(args.kind, args.size_nm, args.pixels, args.sampling, args.seed)
    angles = np.linspace(-70.0, 70.0, args.angles)
    counts = simulate(atoms, angles, args.pixels, args.sampling, args.dose, args.seed)
    simulate_s = time.perf_counter() - start
    series = args.out / f"tilt_series.{args.format}"
    if args.format == "npy":
        np.save(series, counts)
    else:
        from scipy.io import savemat

        savemat(series, {"tilt_series": counts})
    np.savetxt(args.out / "angles.txt", angles, fmt="%.6f")
    truth = atoms.copy()
    center = (args.pixels - 1) / 2.0 * args.sampling
    truth.positions = truth.positions - center  # simgen import: origin at the image centre
    truth.write(args.out / "truth.xyz")
    elements = ",".join(sorted(set(atoms.get_chemical_symbols())))
    print(
        f"{args.kind}: {len(atoms)} atoms ({elements}), {args.size_nm:g} nm, {args.angles} × "
        f"{args.pixels}² px at {args.sampling} Å, dose {args.dose:g}: simulated in {simulate_s:.0f} s"
    )

    store = args.out / "store.zarr"
    steps = {
        "import": [
            str(bin_dir / "simgen"),
            "import",
            str(series),
            "--angles",
            str(args.out / "angles.txt"),
            "--sampling",
            str(args.sampling),
            "--dose",
            str(args.dose),
            "--elements",
            elements,
            "--truth",
            str(args.out / "truth.xyz"),
            "--out",
            str(store),
            "--overwrite",
        ]
    }
    for method in methods:
        steps[method] = [
            str(bin_dir / "aet-bench"),
            "run",
            "--method",
            method,
            "--data",
            str(store),
            "--split",
            "all",
            "--out",
            str(args.out / f"{method}.jsonl"),
            "--overwrite",
        ]
    figures = {}
    for name, command in steps.items():
        figures[name] = timed(command, args.out / f"{name}.log")
        figures[name].update(_scores(args.out / f"{name}.jsonl"))
        print(f"{name}: {json.dumps(figures[name])}", flush=True)
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2))
    print(f"\n{'step':<18}{'wall (min)':>12}{'peak RSS (GB)':>15}  scores")
    for name, row in figures.items():
        scores = {k: v for k, v in row.items() if k not in ("returncode", "wall_s", "peak_rss_gb")}
        status = "" if row["returncode"] == 0 else f"  FAILED (exit {row['returncode']})"
        print(f"{name:<18}{row['wall_s'] / 60:>12.1f}{row['peak_rss_gb']:>15.2f}  {scores}{status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
