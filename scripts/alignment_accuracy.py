"""Accuracy of each alignment method (simgen.reconstruction.alignment) against the shifts the noise drew.

One decahedral Pt particle, linear HAADF imaging, ``misalignment`` of 0.3 Å per axis and a 0.3°
tilt error, Poisson noise at each dose; every method estimates the shifts from the measured data
and the RMS error modulo the gauge (:func:`simgen.reconstruction.alignment.alignment_errors`) is printed in pm,
with the tilt-angle error of projection matching (its angles refined) in degrees. Columns
``pm_full`` (``projection_matching``, what generation uses by default), ``pm_split`` (split
reference, no prior) and ``pm_split_map`` (``projection_matching_split`` as generation runs it:
split reference and the noise chain's stage-precision prior).

    python scripts/alignment_accuracy.py                       # 64 px, 29 angles, 0.4 Å
    python scripts/alignment_accuracy.py --size 48 --angles 15
"""

from __future__ import annotations

import argparse

import numpy as np

from simgen import structures
from simgen.physics import imaging, noise
from simgen.reconstruction.alignment import align_tilt_series, alignment_errors
from simgen.sample import normalise_tilt_series

# column -> (method, keyword arguments); the projection-matching variants refine the angles
VARIANTS = {
    "none": ("none", {}),
    "com": ("com", {}),
    "cross_correlation": ("cross_correlation", {}),
    "pm_full": ("projection_matching", {"reference": "full"}),
    "pm_split": ("projection_matching", {"reference": "split"}),
    "pm_split_map": ("projection_matching", {"reference": "split", "prior": True}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--angles", type=int, default=29)
    parser.add_argument("--sampling", type=float, default=0.4)
    parser.add_argument("--diameter", type=float, default=1.6, help="particle size (nm)")
    parser.add_argument("--doses", default="1e2,1e3,1e4,1e5")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--composition", default="Pt", help="e.g. Pt, FePt, Ni")
    parser.add_argument(
        "--noise",
        action="append",
        default=[],
        help="extra noise spec (repeatable), e.g. read:sigma=1 drift:amplitude=0.5",
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help="columns to compute")
    args = parser.parse_args()
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: {unknown} not in {list(VARIANTS)}")

    rng = np.random.default_rng(args.seed)
    atoms = structures.build_particle("decahedron", args.composition, args.diameter, rng=rng)
    atoms = structures.place_in_volume(atoms, args.size, args.sampling)
    nominal = np.linspace(-70.0, 70.0, args.angles)
    chain = noise.NoiseChain.from_specs(
        ["poisson", "misalignment:sigma=0.3", "tilt_error:sigma=0.3", *args.noise]
    )
    prior = chain.alignment_prior()
    print(
        f"{len(atoms)} atoms {args.composition}, {args.size}² px at {args.sampling} Å, "
        f"{args.angles} tilts ±70°, seed {args.seed}, noise {chain.specs()}"
    )
    print(f"prior: shift σ {prior['shift_sigma']:.3f} Å, angle σ {prior['angle_sigma']:.3f}°")
    print("shift error (pm, RMS modulo gauge); angle error (°) of each projection-matching variant")
    pms = [v for v in variants if VARIANTS[v][0] == "projection_matching"]
    print(
        f"{'dose':>8s} "
        + " ".join(f"{v:>12s}" for v in variants)
        + " "
        + " ".join(f"{'∠' + v[2:]:>12s}" for v in pms)
        + f" {'∠nominal':>9s}"
    )
    for dose in (float(d) for d in args.doses.split(",")):
        draw = np.random.default_rng([args.seed, int(dose)])
        true_angles = chain.true_angles(nominal, draw)
        clean = imaging.simulate_tilt_series(
            atoms, true_angles, size=args.size, sampling=args.sampling
        )
        record: dict = {}
        counts = chain.apply(
            np.maximum(clean, 0.0) * dose, draw, sampling=args.sampling, dose=dose, record=record
        )
        series = normalise_tilt_series(counts, dose)
        cells, angle_cells = [], []
        for variant in variants:
            method, options = VARIANTS[variant]
            options = dict(options)
            if options.pop("prior", False):
                options["shift_prior"] = prior["shift_sigma"] / args.sampling
                options["angle_prior"] = prior["angle_sigma"]
            result = align_tilt_series(
                series, nominal, method, refine_angles=method == "projection_matching", **options
            )
            errors = alignment_errors(
                result.shifts * args.sampling,
                record["shifts"],
                true_angles,
                result.angles,
                true_angles,
            )
            cells.append(f"{100 * errors['shift_error']:12.1f}")
            if method == "projection_matching":
                angle_cells.append(f"{errors['angle_error']:12.3f}")
        before = alignment_errors(
            np.zeros((args.angles, 2)),
            np.zeros((args.angles, 2)),
            true_angles,
            nominal,
            true_angles,
        )["angle_error"]
        print(f"{dose:8.3g} " + " ".join(cells) + " " + " ".join(angle_cells) + f" {before:9.3f}")


if __name__ == "__main__":
    main()
