"""How well can the tilt series itself tell light elements apart? An upper-bound check.

For each chosen sample of a store, the atoms are placed at their TRUE positions and refined against
the measured tilt series (:func:`models.refine.refine_sample`) with a free amplitude per atom
(``fit_amplitudes=True``, a weak log-normal prior), every light atom labelled with one element so
that the labels carry no information. Each light atom is then named by the element whose
calibrated cross-section (:func:`simgen.physics.imaging.cross_section`, scaled by the heaviest element's
fitted offset) is nearest to its fitted one. The fraction named right is what the measurement
itself supports with perfect positions; a classifier that starts from a noisy reconstruction
cannot be expected to do better.

    python scripts/species_separability.py --data pann-train.zarr --indices 19,65,111 \
        --light Fe,Co,Ni,Cu

Prints one line per sample: dose, noise model, the mean ± sd of each element's fitted log
cross-section relative to its calibrated value, and the light atoms named right (all and per
element). Chance is 1 / (number of light elements).
"""

from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="simgen store")
    parser.add_argument("--indices", required=True, help="comma-separated sample indices")
    parser.add_argument("--light", default="Fe,Co,Ni,Cu", help="the elements to tell apart")
    parser.add_argument("--amplitude-prior", type=float, default=1.0, help="log-amplitude prior sd")
    args = parser.parse_args(argv)

    from ase.data import atomic_numbers, chemical_symbols

    from models.refine import RefineConfig, refine_sample
    from simgen.physics.imaging import Microscope, cross_section
    from simgen.store import open_dataset

    light = [e.strip() for e in args.light.split(",") if e.strip()]
    unknown = [e for e in light if e not in atomic_numbers]
    if unknown:
        parser.error(f"--light={args.light!r}: {unknown} are not element symbols")
    indices = [int(i) for i in args.indices.split(",")]
    dataset = open_dataset(args.data)
    sigma = {e: cross_section(e, Microscope()) for e in light}
    placeholder = light[len(light) // 2]
    config = RefineConfig(fit_amplitudes=True, amplitude_prior=args.amplitude_prior)
    for index in indices:
        sample = dataset[index]
        true = np.array([chemical_symbols[int(z)] for z in sample["numbers"]])
        is_light = np.isin(true, light)
        if not is_light.any():
            print(f"{index}: no {light} atoms")
            continue
        labels = [placeholder if e in light else e for e in true]
        result = refine_sample(sample, sample["positions"], labels, config=config)
        log_cs = np.log(result.cross_sections)
        heavy = sorted(set(true[~is_light]), key=lambda e: atomic_numbers[e])
        if heavy:  # the heaviest element's fitted offset fixes the overall scale
            reference = heavy[-1]
            offset = np.median(log_cs[true == reference]) - np.log(
                cross_section(reference, Microscope())
            )
        else:
            offset = np.median(log_cs) - np.log(sigma[placeholder])
        expected = {e: np.log(sigma[e]) + offset for e in light}
        named = np.array([min(light, key=lambda e: abs(c - expected[e])) for c in log_cs])
        parts = [
            f"{e} {np.mean(log_cs[true == e]) - expected[e]:+.3f}±{np.std(log_cs[true == e]):.3f}"
            for e in light
            if (true == e).any()
        ]
        per = " ".join(
            f"{e} {np.mean(named[true == e] == e):.2f}" for e in light if (true == e).any()
        )
        right = np.mean(named[is_light] == true[is_light])
        print(
            f"{index}: dose {float(sample['dose']):.0f} e/Å², {sample.get('noise_model')}; "
            f"log cross-section − calibrated: {' '.join(parts)}; "
            f"light atoms named right {right:.2f} ({per}; chance {1 / len(light):.2f})"
        )


if __name__ == "__main__":
    main()
