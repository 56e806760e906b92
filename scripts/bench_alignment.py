"""Cost of the alignment in generation: the same samples with and without it, one run.

    python scripts/bench_alignment.py [--dataset demo] [--samples 3] [--noise-model realistic]

Takes the first ``--samples`` samples of ``--noise-model`` (whose catalogue ``align: auto``
resolves to ``projection_matching_split``, :func:`simgen.catalog.planning.resolve_align`) and simulates
each twice in this process, alternately, once as planned and once with ``align="none"``
(the same seed, so the same particle and noise): the ratio of the summed seconds is the price
of the alignment. Also prints each sample's alignment shift error (pm). Numbers depend on the
machine and its load: they are printed, never asserted.
"""

from __future__ import annotations

import argparse
import dataclasses
import time


def main() -> None:
    from simgen.catalog import default_catalog_path, get_dataset
    from simgen.catalog.planning import sample_rng
    from simgen.sample import simulate_sample

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="demo")
    parser.add_argument("--samples", type=int, default=3)
    parser.add_argument("--noise-model", default="realistic")
    args = parser.parse_args()
    spec = get_dataset(args.dataset, default_catalog_path())
    chosen = [s for s in spec.plan() if s.noise_model == args.noise_model][: args.samples]
    if not chosen:
        parser.error(f"--noise-model={args.noise_model!r}: no such sample in {args.dataset!r}")
    totals = {"aligned": 0.0, "none": 0.0}
    print(f"{args.dataset}: {spec.size}³, {spec.n_angles} angles, SIRT × {spec.iterations}")
    print(f"{'index':>6s} {'dose':>8s} {'align':>26s} {'s aligned':>10s} {'s none':>8s} {'pm':>6s}")
    for sample in chosen:
        seconds = {}
        for label, variant in (("aligned", sample), ("none", dataclasses.replace(sample, align="none"))):
            start = time.perf_counter()
            result = simulate_sample(variant, sample_rng(spec.seed, sample.index))
            seconds[label] = time.perf_counter() - start
            totals[label] += seconds[label]
            if label == "aligned":
                error = result.meta["align_shift_error_pm"]
        print(
            f"{sample.index:6d} {sample.dose:8.3g} {sample.align:>26s} {seconds['aligned']:10.2f} "
            f"{seconds['none']:8.2f} {error:6.1f}"
        )
    print(
        f"generation with alignment / without: {totals['aligned'] / totals['none']:.2f}× "
        f"({totals['aligned']:.1f} s vs {totals['none']:.1f} s for {len(chosen)} samples)"
    )


if __name__ == "__main__":
    main()
