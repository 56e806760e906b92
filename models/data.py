"""Streaming training data: samples of a simgen store read one at a time, in any process.

A run over a store of 40k samples must not hold the store in memory. :class:`StoreSamples` keeps
only the indices of the selected samples (the ``split``/filter selection of
:func:`simgen.store.open_dataset`) and opens the store lazily in each process that reads from it,
so it works under ``DataLoader(num_workers=N)`` (each worker opens its own handle) and under
``torchrun`` (each rank opens its own). Reading sample ``k`` reads that sample's chunks only.

Training draws are addressed by a global **draw index** ``j`` (step × global batch + position).
Draw ``j`` reads sample ``perm_e[j mod n]`` of epoch ``e = j // n`` (a permutation seeded by
``(seed, e)``) and augments it with a generator seeded by ``(seed, stage, j)``. A draw is thus
the same whichever process or worker computes it: a 2-process run sees exactly the batches of a
1-process run with the same global batch, and a resumed run continues with the same draws.

Stage 2's candidates and features are cached per sample as ``<index>.npz`` files (written to a
temporary name and renamed), so a killed run resumes and the graphs are streamed, never all held.
"""

from __future__ import annotations

import logging
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

__all__ = [
    "StoreSamples",
    "SlabDraws",
    "CropDraws",
    "StepBatches",
    "draw_sample",
    "element_weights",
    "GraphCache",
]

logger = logging.getLogger(__name__)


class StoreSamples(Dataset):
    """The samples of a store selected by split and filters, read on demand.

    Args:
        store: Path of a simgen Zarr store.
        split: Split to select (``"train"``, ``"val"``, ...); None selects every split.
        limit: Use at most the first ``limit`` selected samples.
        **criteria: Further ``Dataset.filter`` criteria on ``/meta`` fields
            (e.g. ``dose=[1e3, 1e4]``).

    Raises:
        ValueError: if the selection is empty.
    """

    def __init__(self, store, split: str | None = None, *, limit: int | None = None, **criteria):
        from simgen.store import open_dataset

        self.path = Path(store)
        if split is not None:
            criteria["split"] = split
        view = open_dataset(self.path).filter(**criteria)
        if len(view) == 0:
            raise ValueError(
                f"data={str(store)!r}: no complete samples"
                + (f" with {criteria}" if criteria else "")
            )
        self.indices = np.asarray(view.indices[:limit] if limit else view.indices, dtype=np.int64)
        self.sampling = float(view.sampling)
        spec = view.attrs.get("spec", {}) or {}
        self.noise_models = {k: list(v) for k, v in (spec.get("noise_models") or {}).items()}
        self.microscope = dict(spec.get("microscope") or {})
        self.target_sigma = float((spec.get("target") or {}).get("sigma", 0.35))
        self._view = None
        self._pid = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_view"], state["_pid"] = None, None  # each process opens its own handle
        return state

    def _open(self):
        if self._view is None or self._pid != os.getpid():
            from simgen.store import open_dataset

            self._view = open_dataset(self.path)
            self._pid = os.getpid()
        return self._view

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        return self._open().read(int(self.indices[int(k)]))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r}, {len(self)} samples)"

    def elements(self) -> tuple[str, ...]:
        """Elements present in the selected samples, lightest first (reads only the atoms)."""
        from ase.data import atomic_numbers, chemical_symbols

        view = self._open()
        present: set[int] = set()
        for i in self.indices:
            present.update(int(z) for z in np.unique(view._numbers(int(i))))
        return tuple(sorted((chemical_symbols[z] for z in present), key=atomic_numbers.get))

    def background(self, sample: dict) -> float:
        """Expected background counts per pixel of a sample's tilt series (its noise chain's)."""
        from simgen.physics.noise import NoiseChain

        specs = self.noise_models.get(str(sample.get("noise_model", "")))
        if not specs:
            return 0.0
        return NoiseChain.from_specs(specs).background(
            float(sample["dose"]), sampling=self.sampling
        )


@lru_cache(maxsize=8)
def _epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(np.random.SeedSequence([seed, 17, epoch])).permutation(n)


def draw_sample(j: int, n: int, seed: int) -> int:
    """Position (in the selection of ``n`` samples) read by draw ``j``: epoch-wise permutations."""
    return int(_epoch_permutation(n, seed, j // n)[j % n])


def element_weights(sample: dict, sigma: float, *, floor: float = 1e-3, cap: float = 100.0):
    """Per-voxel loss weights that give every atom the same weight whatever its element.

    The target is Σ σ(Z_i)·G_i (Å² per voxel); the atom-count volume Σ G_i has the same
    Gaussians with unit weights. Their ratio is the local σ(Z); weighting a squared error by
    ``(σ_max / σ_local)²`` makes an Fe atom weigh as much as a Pt atom (instead of ~2%).
    Voxels far from any atom (count below ``floor`` × its maximum) get weight 1.

    Returns:
        float32 ``[z, y, x]`` weights in [1, cap].
    """
    from simgen.physics.targets import ideal_volume

    target = np.asarray(sample["target"], dtype=np.float32)
    positions = np.asarray(sample["positions"], dtype=np.float64).reshape(-1, 3)
    if len(positions) == 0:
        return np.ones_like(target)
    count = ideal_volume(
        positions,
        target.shape[0],
        float(sample["sampling"]),
        sigma=sigma,
        weights=np.ones(len(positions)),
    )
    near = count > floor * float(count.max())
    local = np.where(near, target / np.maximum(count, 1e-12), 0.0)
    top = float(local.max()) if near.any() else 1.0
    weights = np.where(near & (local > 0), (top / np.maximum(local, 1e-12)) ** 2, 1.0)
    return np.clip(weights, 1.0, cap).astype(np.float32)


class _Draws(Dataset):
    def __init__(self, samples: StoreSamples, *, total: int, seed: int, stage: int):
        self.samples, self.total, self.seed, self.stage = samples, int(total), int(seed), stage

    def __len__(self) -> int:
        return self.total

    def _draw(self, j: int):
        sample = self.samples[draw_sample(int(j), len(self.samples), self.seed)]
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, self.stage, int(j)]))
        return sample, rng


class SlabDraws(_Draws):
    """Stage-1 training items: one augmented full-z/x slab per draw index.

    Item ``j`` is a dict of float32 tensors: ``x`` (1, Z, slab, X) input slab, ``g`` (1, Z, Y, X)
    whole input volume, ``t`` target slab, ``w`` per-voxel element weights of the slab, ``meas``
    (A, slab, X) the matching rows of the background-subtracted, dose-normalised tilt series,
    ``angles`` (A,) the true tilt angles (degrees) of those projections, ``offset`` the
    background per dose; all intensities divided by the input's :func:`models.pann.volume_scale`;
    ``y0`` the slab origin along y.

    Args:
        samples: The store selection.
        slab: Slab thickness (voxels along y).
        total: Number of draws (steps × global batch).
        seed: Sampling and augmentation seed.
        weight_elements: Compute :func:`element_weights` (else all ones).
    """

    def __init__(
        self, samples: StoreSamples, *, slab: int, total: int, seed: int, weight_elements=True
    ):
        super().__init__(samples, total=total, seed=seed, stage=1)
        self.slab, self.weight_elements = int(slab), bool(weight_elements)

    def __getitem__(self, j: int) -> dict:
        from models.augment import random_wedge_flip
        from models.pann import volume_scale
        from simgen.sample import normalise_tilt_series

        s, rng = self._draw(j)
        background = self.samples.background(s)
        series = normalise_tilt_series(s["tilt_series"], float(s["dose"]), background=background)
        weights = (
            element_weights(s, self.samples.target_sigma)
            if self.weight_elements
            else np.ones_like(s["target"])
        )
        nominal = np.asarray(s["angles"], dtype=np.float64)
        true = np.asarray(
            s["angles_true"] if s.get("angles_true") is not None else nominal, dtype=np.float64
        )
        flip = random_wedge_flip(rng, nominal)
        volume, target, weights = (flip.volume(a) for a in (s["volume"], s["target"], weights))
        series = flip.tilt_series(series, nominal)
        if flip.negates_angles:
            true = -true[flip.angle_order(nominal)]
        scale = volume_scale(volume)
        ny = volume.shape[1]
        slab = min(self.slab, ny)
        y0 = int(rng.integers(0, ny - slab + 1))
        rows = slice(y0, y0 + slab)

        def t(a):
            return torch.as_tensor(np.ascontiguousarray(a), dtype=torch.float32)

        return {
            "x": t(volume[None, :, rows, :] / scale),
            "g": t(volume[None] / scale),
            "t": t(target[None, :, rows, :] / scale),
            "w": t(weights[None, :, rows, :]),
            "meas": t(series[:, rows, :] / scale),
            "angles": t(true),
            "offset": torch.tensor(background / float(s["dose"]) / scale, dtype=torch.float32),
            "y0": torch.tensor(y0),
        }


class CropDraws(_Draws):
    """3D U-Net training items: an augmented random ``patch``³ crop (input ``x``, target ``t``)."""

    def __init__(self, samples: StoreSamples, *, patch: int, total: int, seed: int):
        super().__init__(samples, total=total, seed=seed, stage=3)
        self.patch = int(patch)

    def __getitem__(self, j: int) -> dict:
        from models.augment import random_wedge_transform
        from models.pann import volume_scale

        s, rng = self._draw(j)
        v, tg, _ = random_wedge_transform(s["volume"], s["target"], None, rng, angles=s["angles"])
        scale = volume_scale(v)
        corner = [int(rng.integers(0, max(n - self.patch, 0) + 1)) for n in v.shape]
        crop = tuple(slice(c, c + self.patch) for c in corner)
        return {
            "x": torch.as_tensor(np.ascontiguousarray(v[crop] / scale)[None], dtype=torch.float32),
            "t": torch.as_tensor(np.ascontiguousarray(tg[crop] / scale)[None], dtype=torch.float32),
        }


class StepBatches(Sampler):
    """Batches of draw indices of one rank: step ``s`` of a global batch ``G`` over ``W`` ranks.

    Rank ``r`` takes draws ``s·G + r·G/W … s·G + (r+1)·G/W − 1``: the union over ranks is the
    global batch of a single-process run, whatever ``W``.

    Args:
        start: First step (resume point).
        steps: Total steps.
        global_batch: Draws per step over all ranks (a multiple of ``world_size``).
        rank: This process's rank.
        world_size: Number of processes.
    """

    def __init__(self, start: int, steps: int, global_batch: int, rank: int = 0, world_size=1):
        if global_batch % world_size:
            raise ValueError(
                f"batch_size={global_batch}: expected a multiple of the world size {world_size}"
            )
        self.start, self.steps, self.global_batch = int(start), int(steps), int(global_batch)
        self.rank, self.world_size = int(rank), int(world_size)
        self.local = self.global_batch // self.world_size

    def __len__(self) -> int:
        return max(self.steps - self.start, 0)

    def __iter__(self):
        for step in range(self.start, self.steps):
            first = step * self.global_batch + self.rank * self.local
            yield list(range(first, first + self.local))


class GraphCache:
    """Stage-2 inputs per sample (``positions``, ``features``, ``labels``) as ``<index>.npz``.

    Args:
        root: Cache directory (inside the run directory; keyed by the stage-1 weights).
    """

    def __init__(self, root):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, index: int) -> Path:
        return self.root / f"{int(index)}.npz"

    def has(self, index: int) -> bool:
        return self.path(index).exists()

    def write(self, index: int, positions, features, labels) -> None:
        """Write atomically (temporary file, then rename): a killed run leaves no half file."""
        final = self.path(index)
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.tmp.npz")
        np.savez(
            tmp,
            positions=np.asarray(positions, dtype=np.float64),
            features=np.asarray(features, dtype=np.float32),
            labels=np.asarray(labels, dtype=np.int64),
        )
        tmp.replace(final)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        with np.load(self.path(index), allow_pickle=False) as f:
            return f["positions"], f["features"], f["labels"]
