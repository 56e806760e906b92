"""The plan of a dataset: which samples, in which order, with which seeds and splits.

:func:`plan_rows` turns a validated :class:`simgen.catalog.DatasetSpec` into one plain dict per
sample (grid cells × replicas, then random draws; particle parameters drawn once per particle;
train/val/test assigned by particle; optionally a seeded shuffle), and :func:`plan` into
:class:`simgen.sample.SampleSpec` objects. Every random choice comes from a generator seeded by
the dataset seed and a tag of its own, so adding draws of one kind never moves another's:

- ``plan``: particle and acquisition draws, in plan order;
- ``splt``: the permutation of particles into splits;
- ``ordr``: the shuffle of ``order: shuffled``;
- ``stru``: the structure seed of a particle shared across grid axes;
- each sample's own generator is :func:`sample_rng` (the dataset seed spawned at its index).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "GEOMETRIC_NOISE",
    "sample_rng",
    "structure_seed",
    "resolve_align",
    "axis_values",
    "plan_rows",
    "assign_splits",
    "plan",
    "summary",
]

_PLAN_TAG = 0x706C616E  # "plan"
_STRUCTURE_TAG = 0x73747275  # "stru"
_SPLIT_TAG = 0x73706C74  # "splt"
_ORDER_TAG = 0x6F726472  # "ordr"

#: Noise models whose errors an alignment estimates (``reconstruction.align: auto``).
GEOMETRIC_NOISE = ("misalignment", "drift", "rotation", "tilt_error")


def sample_rng(dataset_seed: int, index: int) -> np.random.Generator:
    """Generator of sample ``index``: ``SeedSequence(dataset_seed).spawn(n)[index]``, in O(1)."""
    return np.random.default_rng(np.random.SeedSequence(dataset_seed, spawn_key=(index,)))


def structure_seed(dataset_seed: int, particle: int) -> int:
    """A 63-bit seed for the structure of particle ``particle`` (independent of dose and noise)."""
    state = np.random.SeedSequence(
        [dataset_seed, _STRUCTURE_TAG], spawn_key=(particle,)
    ).generate_state(2)
    return (int(state[0]) << 31) | (int(state[1]) >> 1)


def resolve_align(align: str, noise: Sequence[str]) -> str:
    """The alignment a sample gets: ``"auto"`` → ``"projection_matching_split"`` (projection
    matching against split references with the stage-precision prior of the noise models) when
    ``noise`` (spec strings) includes a geometric error (:data:`GEOMETRIC_NOISE`), else
    ``"none"``. (Until 2026-11-30 ``auto`` chose ``"projection_matching"``; name it in the
    catalogue to reproduce a store made then.)"""
    if align != "auto":
        return align
    names = {str(spec).partition(":")[0].strip() for spec in noise}
    return "projection_matching_split" if names & set(GEOMETRIC_NOISE) else "none"


def axis_values(spec, axis: str) -> tuple:
    """The values a grid axis takes in ``spec`` (a :class:`simgen.catalog.DatasetSpec`)."""
    if axis == "morphology":
        return spec.morphologies
    if axis == "composition":
        return spec.compositions
    if axis == "dose":
        return spec.doses
    if axis == "noise_model":
        return tuple(n for n, _ in spec.noise_models)
    if axis == "size_nm":
        return spec.size_nm.values
    if axis == "tilt_scheme":
        return spec.tilt_schemes
    if axis == "damage_model":
        return tuple(n for n, _ in spec.damage_models) or ("",)
    raise AssertionError(axis)


def plan_rows(spec) -> list[dict]:
    """The plan of ``spec`` (a :class:`simgen.catalog.DatasetSpec`) as plain dicts, one per sample,
    in order: grid cells first (axes in ``grid_axes`` order, replicas innermost), then the random
    draws; splits assigned by particle; a seeded shuffle with ``order: shuffled``."""
    plan_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, _PLAN_TAG]))
    noise = dict(spec.noise_models)
    rows: list[dict] = []
    particle_of: list[int] = []
    particle_params: dict[tuple, dict] = {}

    def choose(rng: np.random.Generator, options: Sequence):
        return options[int(rng.integers(len(options)))] if len(options) > 1 else options[0]

    def particle_draws(rng: np.random.Generator, fixed: Mapping) -> dict:
        # Everything about the particle: fixed by the grid cell or drawn once per particle.
        return {
            "morphology": fixed["morphology"]
            if "morphology" in fixed
            else choose(rng, spec.morphologies),
            "composition": fixed["composition"]
            if "composition" in fixed
            else choose(rng, spec.compositions),
            "size_nm": fixed["size_nm"] if "size_nm" in fixed else spec.size_nm.draw(rng),
            "thermal_sigma": spec.thermal_sigma.draw(rng),
            "vacancy_fraction": spec.vacancy_fraction.draw(rng),
            "orientation": choose(rng, spec.orientations),
        }

    def acquisition_draws(rng: np.random.Generator, fixed: Mapping) -> dict:
        noise_names = [n for n, _ in spec.noise_models]
        out = {
            "dose": fixed["dose"] if "dose" in fixed else choose(rng, spec.doses),
            "noise_model": fixed["noise_model"]
            if "noise_model" in fixed
            else choose(rng, noise_names),
        }
        # Single options draw nothing, so datasets without schemes or damage keep their plan.
        for axis in ("tilt_scheme", "damage_model"):
            out[axis] = fixed[axis] if axis in fixed else choose(rng, axis_values(spec, axis))
        return out

    if spec.replicas:
        axes = spec.grid_axes
        shared = set(spec.same_structure_across)
        for cell in itertools.product(*(axis_values(spec, a) for a in axes)):
            values = dict(zip(axes, cell))
            for replica in range(spec.replicas):
                key = tuple(v for a, v in values.items() if a not in shared) + (replica,)
                if key not in particle_params:
                    params = particle_draws(plan_rng, values)
                    params["particle"] = len(particle_params)
                    particle_params[key] = params
                params = particle_params[key]
                rows.append({**acquisition_draws(plan_rng, values), "replica": replica, **params})
                particle_of.append(params["particle"])
    n_particles = len(particle_params)
    for k in range(spec.count):
        params = particle_draws(plan_rng, {})
        rows.append(
            {
                **acquisition_draws(plan_rng, {}),
                "replica": k,
                **params,
                "particle": n_particles + k,
            }
        )
        particle_of.append(n_particles + k)

    splits = assign_splits(spec, rows, particle_of)
    for row, split_name in zip(rows, splits):
        row["split"] = split_name
    if spec.order == "shuffled":
        # A seeded shuffle makes any prefix (--limit N) a representative subset.
        order_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, _ORDER_TAG]))
        rows = [rows[k] for k in order_rng.permutation(len(rows))]
    share = bool(spec.same_structure_across)
    structure_seeds: dict[int, int] = {}  # one per particle (many rows share a particle)
    for index, row in enumerate(rows):
        row["index"] = index
        row["noise"] = noise[row["noise_model"]]
        row["dose_profile"] = spec.dose_profile
        row["damage"] = dict(spec.damage_models).get(row["damage_model"], ())
        row["seed"] = spec.seed
        if share and row["particle"] not in structure_seeds:
            structure_seeds[row["particle"]] = structure_seed(spec.seed, row["particle"])
        row["structure_seed"] = structure_seeds[row["particle"]] if share else None
    return rows


def assign_splits(spec, rows: list[dict], particle_of: list[int]) -> list[str]:
    """The split of each row: held-out rules first, the other particles by ``split.fractions``."""
    splits: list[str | None] = [spec.split.held_out_split(r) for r in rows]
    free_particles = sorted({p for p, s in zip(particle_of, splits) if s is None})
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, _SPLIT_TAG]))
    order = rng.permutation(len(free_particles))
    names = [n for n, _ in spec.split.fractions]
    bounds = np.rint(np.cumsum([f for _, f in spec.split.fractions]) * len(free_particles)).astype(
        int
    )
    particle_split = {}
    for rank, position in enumerate(order):
        particle_split[free_particles[position]] = names[
            int(np.searchsorted(bounds, rank, side="right"))
        ]
    return [s if s is not None else particle_split[p] for s, p in zip(splits, particle_of)]


def plan(spec, limit: int | None = None, *, rows: list[dict] | None = None) -> list:
    """The resolved samples (:class:`simgen.sample.SampleSpec`), deterministic order.

    Grid cells come first (axes in ``grid_axes`` order, replicas innermost), then the random
    draws. ``limit`` keeps the first N; ``rows`` reuses a :meth:`plan_rows` result.
    """
    from simgen.sample import SampleSpec

    microscope = spec.microscope_object()
    specs = []
    for row in (rows if rows is not None else spec.plan_rows())[:limit]:
        specs.append(
            SampleSpec(
                index=row["index"],
                morphology=row["morphology"],
                composition=row["composition"],
                size_nm=row["size_nm"],
                dose=row["dose"],
                angles=spec.angles,
                sampling=spec.sampling,
                size=spec.size,
                noise=row["noise"],
                noise_model=row["noise_model"],
                mode=spec.mode,
                microscope=microscope,
                thermal_sigma=row["thermal_sigma"],
                vacancy_fraction=row["vacancy_fraction"],
                orientation=row["orientation"],
                recon=spec.recon,
                iterations=spec.iterations,
                align=resolve_align(spec.align, row["noise"]),
                target_sigma=spec.target_sigma,
                split=row["split"],
                structure_seed=row["structure_seed"],
                tilt_scheme=row["tilt_scheme"],
                dose_profile=row["dose_profile"],
                damage=row["damage"],
                damage_model=row["damage_model"],
            )
        )
    return specs


def summary(spec, limit: int | None = None) -> str:
    """The dry-run text of ``spec``'s plan: what would be generated (contains ``samples: N``)."""
    rows = plan_rows(spec)
    n_total = len(rows)
    rows = rows[:limit] if limit is not None else rows
    angles = np.asarray(spec.angles)
    lines = [
        f"dataset: {spec.name}",
        f"description: {spec.description}",
        f"samples: {len(rows)}"
        + (f" (first {len(rows)} of {n_total})" if len(rows) < n_total else ""),
        f"seed: {spec.seed}",
        f"volume: {spec.size}³ voxels at {spec.sampling:g} Å ({spec.size * spec.sampling:.1f} Å side)",
        f"tilt: {len(angles)} angles from {angles.min():g}° to {angles.max():g}°",
        f"mode: {spec.mode}; reconstruction: {spec.recon} × {spec.iterations}, align: {spec.align}",
        "microscope: " + ", ".join(f"{k}={v:g}" for k, v in spec.microscope),
    ]
    if spec.replicas:
        lines.append(
            "grid: "
            + " × ".join(f"{len(axis_values(spec, a))} {a}" for a in spec.grid_axes)
            + f" × {spec.replicas} replicas = {spec.n_grid}"
        )
    if spec.count:
        lines.append(f"random draws: {spec.count}")
    lines.append(f"order: {spec.order}")
    if spec.same_structure_across:
        n_particles = len({r["particle"] for r in rows})
        lines.append(
            f"same particle across: {', '.join(spec.same_structure_across)} ({n_particles} particles)"
        )
    keys = ["morphology", "composition", "dose", "noise_model", "split"]
    if spec.tracks_acquisition:
        keys[4:4] = ["tilt_scheme", "damage_model"]
        lines.append(f"dose profile: {spec.dose_profile}")
    for key in keys:
        counts: dict = {}
        for r in rows:
            counts[r[key]] = counts.get(r[key], 0) + 1
        text = ", ".join(
            f"{k:g}: {v}" if isinstance(k, float) else f"{k}: {v}" for k, v in counts.items()
        )
        lines.append(f"  by {key}: {text}")
    sizes = [r["size_nm"] for r in rows]
    if sizes:
        lines.append(f"  size_nm: {min(sizes):.2f}–{max(sizes):.2f}")
    for name, specs in spec.noise_models:
        lines.append(f"  noise {name}: {', '.join(map(str, specs)) or '(none)'}")
    for name, specs in spec.damage_models:
        lines.append(f"  damage {name}: {', '.join(map(str, specs)) or '(none)'}")
    raw = 4 * len(rows) * (len(angles) * spec.size**2 + 2 * spec.size**3)
    lines.append(f"raw size: {raw / 1e9:.2f} GB before compression")
    return "\n".join(lines)
