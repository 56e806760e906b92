"""PANN: physics-aware neural networks for low-dose AET (arXiv 2603.19942).

Stage 1 refines a reconstructed volume with a global-local 3D residual U-Net. Stage 2 traces
candidate atoms in the refined volume, describes each by the 3D Zernike invariants of its
neighbourhood plus its intensities, and classifies every candidate with a graph attention
Transformer into one of the elements or "not an atom" (which removes false peaks).

A :class:`PannModel` bundles both stages with the configuration and the feature normalisation;
:meth:`PannModel.save` / :meth:`PannModel.load` round-trip it as one ``pann.pt`` file.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch

from models.species import NOT_AN_ATOM
from models.tracing import trace_atoms
from models.weights import (  # noqa: F401 (re-export)
    CHECKPOINT_ERRORS,
    load_checkpoint,
    save_atomic,
    weights_file,
)
from simgen.tools.outputs import write_text_atomic

__all__ = [
    "PannConfig",
    "PannModel",
    "PannPrediction",
    "volume_scale",
    "candidate_features",
    "context_features",
    "NOT_AN_ATOM",
    "refine_config",
]

logger = logging.getLogger(__name__)

CHECKPOINT_VERSION = 1

#: Exponent of the power law sigma(Z) ∝ Z**1.7 that approximates ADF-STEM cross-sections
#: (the same law the classical species assignment orders elements by); it sets the expected
#: log-contrast between the elements present (:func:`context_features`).
Z_EXPONENT = 1.7


@dataclass
class PannConfig:
    """Hyperparameters of both stages and of their training.

    Args:
        elements: Elements the classifier knows (class order); "not an atom" is appended.
        sampling: Voxel size (Å) of the training volumes; inputs at another sampling are rescaled.
        base_channels: Stage-1 channels at full resolution.
        levels: Stage-1 U-Net depth.
        global_size: Side (voxels) of the downsampled whole volume seen by the global branch.
        slab: Thickness (voxels, along the tilt axis y) of the full-x/z slabs stage 1 trains on; a
            slab's projection is exactly a band of rows of the tilt series, so the physics term is
            exact on a patch.
        physics_weight: Weight of the re-projection term against the measured tilt series.
        stage1_steps: Optimiser steps of stage 1.
        batch_size: Slabs per stage-1 step.
        lr: Adam learning rate of both stages.
        zernike_order: Order of the 3D Zernike moments.
        zernike_radius: Radius (Å) of the sphere described around each candidate.
        knn: Neighbours per candidate in the graph.
        hidden: Stage-2 hidden width.
        heads: Stage-2 attention heads.
        layers: Stage-2 graph layers.
        stage2_epochs: Passes over the training graphs in stage 2.
        trace_threshold: Candidate threshold as a fraction of the volume's robust maximum (kept
            low: stage 2 removes the false peaks).
        match_radius: Radius (Å) within which a candidate is labelled with a true atom.
        refine: Refine the atoms against the measured tilt series (:mod:`models.refine`)
            whenever :meth:`PannModel.predict` is given one.
        reassign: Last step, the species step: every atom's element is decided by the
            measurement with stage 2's probabilities as the prior
            (:mod:`models.species_refine`): with a tilt series, from per-atom cross-sections refit
            against it (:func:`models.species_refine.reassign_species`); without one, from the
            refined volume's integrated intensities
            (:func:`models.species_refine.species_from_volume`). Needs two or more elements
            present. Default on (the shipped weights' config turns it on); a checkpoint without
            this key is read as off, as it was trained and evaluated.
        seed: Seed of initialisation and sampling.
        stage2_features: Stage-2 node features. 1: :func:`candidate_features` only (weights
            before 2026-11-30; a checkpoint without this key is read as 1). 2: plus
            :func:`context_features` (intensity contrast within the particle, the elements
            present and their expected contrast), and the training loss sees only the elements
            present, as inference does.
        class_weight_power: Stage-2 cross-entropy class weights ``(1 / frequency)**power``
            (1: every class the same total weight; 0: plain cross-entropy).
    """

    elements: tuple[str, ...] = ()
    sampling: float = 0.4
    base_channels: int = 16
    levels: int = 3
    global_size: int = 32
    slab: int = 16
    physics_weight: float = 0.1
    stage1_steps: int = 2000
    batch_size: int = 2
    lr: float = 2e-3
    zernike_order: int = 8
    zernike_radius: float = 2.0
    knn: int = 12
    hidden: int = 64
    heads: int = 4
    layers: int = 3
    stage2_epochs: int = 40
    trace_threshold: float = 0.05
    match_radius: float = 0.5
    refine: bool = True
    reassign: bool = True
    seed: int = 0
    stage2_features: int = 2
    class_weight_power: float = 1.0

    @property
    def classes(self) -> tuple[str, ...]:
        return (*self.elements, NOT_AN_ATOM)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PannConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"config keys {unknown}: not PANN settings (allowed: {sorted(known)})")
        data = dict(data)
        data.setdefault("stage2_features", 1)  # checkpoints written before the key existed
        data.setdefault("reassign", False)  # likewise: they predicted without reassignment
        if data["stage2_features"] not in (1, 2):
            raise ValueError(f"stage2_features={data['stage2_features']!r}: expected 1 or 2")
        if "elements" in data:
            data["elements"] = tuple(data["elements"])
        return cls(**data)


def refine_config():
    """The refinement PANN runs, for its atoms and for the species step's amplitude refit:
    float32 where the Fisher information allows it (``RefinementProblem.float32_bias``; a float32
    solve that runs away is solved again in float64), float64 otherwise. The species step on the
    demo's test samples: the same labels at 1.6-1.8x the speed (docs/guide/species.md)."""
    from models.refine import RefineConfig

    return RefineConfig(precision="auto")


def _mixed_groups(elements) -> list[list[str]]:
    """Contrast groups of two or more among ``elements`` (none when ``elements`` is None)."""
    from models.species_refine import contrast_groups

    if elements is None:
        return []
    return [g for g in contrast_groups(list(elements)) if len(g) >= 2]


@dataclass
class PannPrediction:
    """Atoms predicted by PANN for one volume.

    Args:
        positions: (N, 3) Å, (x, y, z) in the volume frame.
        elements: N element symbols.
        probabilities: (N, C) class probabilities, columns = ``classes``.
        classes: Class names (elements + "none").
        refined: The stage-1 refined volume ``[z, y, x]`` at the input sampling.
    """

    positions: np.ndarray
    elements: list[str]
    probabilities: np.ndarray
    classes: tuple[str, ...]
    refined: np.ndarray | None = None
    extra: dict = field(default_factory=dict)


def volume_scale(volume: np.ndarray) -> float:
    """Robust intensity scale of a volume (its 99.9th percentile), so networks see O(1) values.

    Per-volume scaling keeps the method usable on experimental reconstructions whose absolute
    scale is arbitrary.
    """
    value = float(np.percentile(volume, 99.9))
    return value if value > 0 else float(np.max(np.abs(volume))) or 1.0


def _check_volume(volume: np.ndarray, name: str = "volume") -> np.ndarray:
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"{name}: expected a 3D array [z, y, x], got shape {volume.shape}")
    if min(volume.shape) < 8:
        raise ValueError(f"{name}: expected at least 8 voxels per axis, got shape {volume.shape}")
    if not np.all(np.isfinite(volume)):
        raise ValueError(f"{name}: contains NaN or infinite values")
    return volume.astype(np.float32, copy=False)


def candidate_features(
    refined: np.ndarray,
    raw: np.ndarray,
    positions: np.ndarray,
    sampling: float,
    config: PannConfig,
) -> np.ndarray:
    """Per-candidate node features: Zernike invariants of the refined density + intensities.

    Intensities are divided by the median over candidates, so the features do not depend on the
    volume's absolute scale (dose, detector gain, experimental normalisation).

    Returns:
        (N, F) float32.
    """
    from models.zernike import atom_descriptors

    n = len(positions)
    if n == 0:
        return np.zeros((0, 0), dtype=np.float32)
    zern, zern_raw = atom_descriptors(
        [refined, raw], positions, sampling, config.zernike_radius, order=config.zernike_order
    )
    # Intensity-like invariants (n = l = 0 moment) relative to the sample's typical candidate.
    scale = np.median(zern[:, 0]) or 1.0
    scale_raw = np.median(zern_raw[:, 0]) or 1.0
    shape = zern / np.maximum(np.abs(zern[:, :1]), 1e-12)
    shape_raw = zern_raw / np.maximum(np.abs(zern_raw[:, :1]), 1e-12)
    idx = np.clip(
        np.rint(positions[:, ::-1] / sampling).astype(int), 0, np.array(refined.shape) - 1
    )
    peak = refined[idx[:, 0], idx[:, 1], idx[:, 2]]
    peak_raw = raw[idx[:, 0], idx[:, 1], idx[:, 2]]
    # Local environment: number of candidates within 1.2× and 1.6× a typical bond.
    from scipy.spatial import cKDTree

    tree = cKDTree(positions)
    counts = [
        np.array([len(c) - 1 for c in tree.query_ball_point(positions, r)]) for r in (3.0, 4.2)
    ]
    features = np.column_stack(
        [
            zern[:, 0] / scale,
            zern_raw[:, 0] / scale_raw,
            peak / (np.median(peak) or 1.0),
            peak_raw / (np.median(peak_raw) or 1.0),
            shape[:, 1:],
            shape_raw[:, 1:],
            counts[0] / 12.0,
            counts[1] / 12.0,
        ]
    )
    return np.nan_to_num(features.astype(np.float32))


def _log_ratio(values: np.ndarray, reference: float) -> np.ndarray:
    if not reference > 0:
        return np.zeros(len(values))
    return np.log(np.clip(values / reference, 1e-3, None))


def _ranks(values: np.ndarray) -> np.ndarray:
    """Fraction of the other candidates with a smaller value (0 = lowest, 1 = highest)."""
    n = len(values)
    return np.argsort(np.argsort(values, kind="stable"), kind="stable") / max(n - 1, 1)


def context_features(
    base: np.ndarray, elements: tuple[str, ...] | list[str], present=None
) -> np.ndarray:
    """Per-candidate context features added by ``stage2_features=2``.

    :func:`candidate_features` divides intensities by the median over *all* candidates; most
    candidates are false peaks whose share changes with dose and particle, so that median moves
    and the contrast between elements is blurred across particles. These features describe each
    candidate's intensity within the particle's own distribution instead, and what contrast the
    elements present should give:

    - log of the integrated and peak intensities (refined and raw) over their 95th percentile
      over candidates, and of the refined ones over their 75th percentile (6);
    - the rank of the refined integrated and peak intensities among the candidates (2);
    - per element of ``elements``: 1 if present, else 0 (len(elements));
    - per element: its expected log-contrast ``Z_EXPONENT * log(Z / Z_heaviest present)`` if
      present, else 0 (len(elements)).

    All are unchanged when the volume is multiplied by a positive constant.

    Args:
        base: (N, F) features from :func:`candidate_features` (columns 0-3: integrated and peak
            intensities of the refined and raw volumes over their median).
        elements: The weights' elements (class order).
        present: Elements in the particle (a subset of ``elements``); ``None``: all of them.

    Returns:
        (N, 8 + 2 len(elements)) float32.
    """
    from ase.data import atomic_numbers

    n = len(base)
    present = set(elements if present is None else present)
    unknown = present - set(elements)
    if unknown:
        raise ValueError(f"present={sorted(present)}: {sorted(unknown)} not among {list(elements)}")
    if n == 0:
        return np.zeros((0, 8 + 2 * len(elements)), dtype=np.float32)
    columns = [_log_ratio(base[:, c], np.percentile(base[:, c], 95)) for c in range(4)]
    columns += [_log_ratio(base[:, c], np.percentile(base[:, c], 75)) for c in (0, 2)]
    columns += [_ranks(base[:, 0]), _ranks(base[:, 2])]
    flags = np.array([e in present for e in elements], dtype=np.float64)
    z = np.array([atomic_numbers[e] for e in elements], dtype=np.float64)
    z_max = max(z[flags > 0]) if flags.any() else max(z)
    expected = np.where(flags > 0, Z_EXPONENT * np.log(z / z_max), 0.0)
    per_node = np.broadcast_to(np.concatenate([flags, expected]), (n, 2 * len(elements)))
    return np.nan_to_num(np.column_stack([*columns, per_node]).astype(np.float32))


def stage2_features(base: np.ndarray, config: PannConfig, present=None) -> np.ndarray:
    """The stage-2 node features of ``config.stage2_features`` from :func:`candidate_features`."""
    if config.stage2_features == 1:
        return base
    return np.hstack([base, context_features(base, config.elements, present)])


#: Voxel sizes (Å) :meth:`PannModel.predict` accepts; any is resampled to the weights' sampling.
MIN_SAMPLING, MAX_SAMPLING = 0.1, 1.0


def resample_volume(volume: np.ndarray, sampling: float, target: float):
    """A volume resampled to voxel size ``target`` (Å), for the networks.

    Coarser input (upsampling): Fourier interpolation (zero-padding the spectrum,
    :func:`scipy.signal.resample` per axis), exact for a band-limited volume; voxel ``j`` of the
    result lies at ``j · sampling · n / m``. Finer input (downsampling): a Gaussian blur of
    ``sqrt(f² − 1) / 2`` input voxels (``f`` the reduction factor) against aliasing, then
    cubic-spline interpolation (:func:`scipy.ndimage.zoom`, order 3, corner voxels onto each
    other). Both keep atom positions within 0.02 Å through the round trip (0.15–0.8 Å, tests),
    where linear interpolation shifts them by up to 0.1 Å. Within 2% of ``target`` the volume is
    returned as it is.

    Args:
        volume: ``[z, y, x]``.
        sampling: Its voxel size, Å.
        target: The wanted voxel size, Å.

    Returns:
        ``(work, work_sampling, spacing)``: the resampled volume, its nominal voxel size, and the
        exact (x, y, z) distance (Å) between its voxel centres, which
        :func:`to_input_positions` needs to map positions back.
    """
    ratio = float(sampling) / float(target)
    if abs(ratio - 1.0) <= 0.02:
        return volume, float(sampling), np.full(3, float(sampling))
    n = np.array(volume.shape[::-1])  # (x, y, z) voxels
    if ratio > 1.0:
        from scipy.signal import resample

        m = np.maximum(np.rint(n * ratio).astype(int), 1)
        work = np.asarray(volume, dtype=np.float64)
        for axis, length in zip((2, 1, 0), m):  # x, y, z
            work = resample(work, int(length), axis=axis)
        return work.astype(np.float32), float(target), float(sampling) * n / m
    from scipy.ndimage import gaussian_filter, zoom

    source = gaussian_filter(volume.astype(np.float32), math.sqrt(1.0 / ratio**2 - 1.0) / 2.0)
    work = zoom(source, ratio, order=3).astype(np.float32)
    # zoom maps the corner voxels onto each other, so the exact resampled spacing is
    # sampling·(n−1)/(m−1) per axis, not the requested one (0.4029 vs 0.4 Å for 0.357 Å).
    m = np.array(work.shape[::-1])
    return work, float(target), float(sampling) * (n - 1) / np.maximum(m - 1, 1)


def to_input_positions(positions, work_sampling: float, spacing) -> np.ndarray:
    """Positions (Å, x y z) found in a :func:`resample_volume` volume, in the input volume's frame."""
    positions = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    return positions / float(work_sampling) * np.asarray(spacing, dtype=np.float64)


class PannModel:
    """Both PANN stages with their configuration; apply with :meth:`predict`.

    Args:
        config: Hyperparameters and the element classes.
        stage1: The global-local ResUNet (built from ``config`` when omitted).
        stage2: The species Transformer (built lazily once the feature width is known).
        feature_mean: Per-feature mean used to standardise stage-2 inputs.
        feature_std: Per-feature standard deviation.
    """

    def __init__(
        self, config: PannConfig, stage1=None, stage2=None, feature_mean=None, feature_std=None
    ):
        self.config = config
        self.stage1 = stage1 if stage1 is not None else build_stage1(config)
        self.stage2 = stage2
        self.feature_mean = feature_mean
        self.feature_std = feature_std
        self.history: dict = {}

    def __repr__(self) -> str:
        n1 = sum(p.numel() for p in self.stage1.parameters())
        n2 = sum(p.numel() for p in self.stage2.parameters()) if self.stage2 is not None else 0
        return f"PannModel(elements={self.config.elements}, sampling={self.config.sampling}, params={n1 + n2:,})"

    # ------------------------------------------------------------------ stage 1
    def refine(self, volume: np.ndarray, *, device: str | None = None) -> np.ndarray:
        """Deprecated name of :meth:`restore_volume` ("refine" is the likelihood step's word)."""
        import warnings

        warnings.warn(
            "PannModel.refine is renamed restore_volume (stage 1); refine will be removed",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.restore_volume(volume, device=device)

    def restore_volume(self, volume: np.ndarray, *, device: str | None = None) -> np.ndarray:
        """Stage 1: the network's restored (denoised, sharpened) volume ``[z, y, x]``, in the
        input's intensity units."""
        from models.resunet import sliding_window_predict

        volume = _check_volume(volume)
        scale = volume_scale(volume)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.stage1.to(device).eval()
        refined = sliding_window_predict(
            self.stage1,
            volume / scale,
            patch_size=_slab_patch(volume.shape, self.config),
            overlap=0.25,
        )
        return (np.asarray(refined, dtype=np.float32) * scale).astype(np.float32)

    # ------------------------------------------------------------------ stage 2
    def candidates(self, refined: np.ndarray, sampling: float):
        return trace_atoms(
            refined,
            sampling,
            threshold=self.config.trace_threshold * volume_scale(refined),
            elements=list(self.config.elements) or None,
        )

    def graph_inputs(self, refined, raw, positions, sampling, elements=None):
        """Stage-2 inputs: standardised node features, ``edge_index``, ``edge_attr``.

        ``elements`` (those present; ``None``: all the weights know) matter only for
        ``stage2_features=2``.
        """
        from models.species import build_graph

        base = candidate_features(refined, raw, positions, sampling, self.config)
        features = stage2_features(base, self.config, elements)
        if self.feature_mean is not None:
            features = (features - self.feature_mean) / self.feature_std
        edge_index, edge_attr = build_graph(
            torch.as_tensor(positions, dtype=torch.float32), k=self.config.knn
        )
        return torch.as_tensor(features, dtype=torch.float32), edge_index, edge_attr

    def _check_elements_given(self, elements) -> None:
        """Weights with ``stage2_features=2`` classify each candidate relative to the elements
        present; without them they see an input they were never trained on (the shipped weights
        then call every candidate "not an atom"), so the elements are required."""
        if elements is None and self.stage2 is not None and self.config.stage2_features >= 2:
            raise ValueError(
                "elements=None: these weights (stage2_features=2) need the elements present, "
                f"a subset of {list(self.config.elements)} (e.g. --elements Fe,Pt)"
            )

    def classify(self, refined, raw, positions, sampling, elements=None) -> np.ndarray:
        """Class probabilities (N, C) of candidates; classes absent from ``elements`` get 0."""
        if self.stage2 is None:
            raise ValueError("weights: this model has no trained stage 2 (species classifier)")
        if len(positions) == 0:
            return np.zeros((0, len(self.config.classes)), dtype=np.float32)
        self._check_elements_given(elements)
        x, edge_index, edge_attr = self.graph_inputs(refined, raw, positions, sampling, elements)
        self.stage2.eval()
        with torch.no_grad():
            logits = self.stage2(x, edge_index, edge_attr)
        if elements is not None:
            allowed = torch.tensor([c in elements or c == NOT_AN_ATOM for c in self.config.classes])
            logits = logits.masked_fill(~allowed, float("-inf"))
        return torch.softmax(logits, dim=-1).numpy().astype(np.float32)

    # ------------------------------------------------------------------ full pipeline
    def predict(
        self,
        volume: np.ndarray,
        sampling: float,
        elements=None,
        *,
        keep_refined=True,
        measurement: dict | None = None,
    ) -> PannPrediction:
        """Predict atoms (positions in Å, elements, class probabilities) in a reconstruction.

        Args:
            volume: Reconstruction ``[z, y, x]`` (any intensity scale).
            sampling: Its voxel size in Å; rescaled to the training sampling when they differ.
            elements: Elements present (a subset of the model's); ``None`` allows all.
            measurement: The measured data (a store sample: ``tilt_series``, ``angles``, ``dose``,
                ``sampling``, optional ``shifts``/``angles_estimated``); with ``config.refine`` the
                atoms are refined against it (:func:`models.refine.refine_sample`), and with
                ``config.reassign`` every atom's element is decided by it with stage 2 as the
                prior (:func:`models.species_refine.reassign_species`; without a measurement
                the refined volume's intensities stand in,
                :func:`models.species_refine.species_from_volume`). The network's labels are kept
                in ``extra["base_elements"]``, the posterior over the elements present in
                ``extra["species_posteriors"]`` (columns ``extra["species_classes"]``), and each
                row of ``probabilities`` shares its elements' total by that posterior.
        """
        volume = _check_volume(volume)
        if not (np.isfinite(sampling) and sampling > 0):
            raise ValueError(f"sampling={sampling!r}: expected a positive voxel size in Å")
        if not MIN_SAMPLING <= sampling <= MAX_SAMPLING:
            raise ValueError(
                f"sampling={sampling} Å: expected a voxel size within {MIN_SAMPLING}–{MAX_SAMPLING} Å "
                f"(the volume is resampled to the weights' {self.config.sampling} Å)"
            )
        self._check_elements_given(elements)
        # Elements the weights never saw are classified through known proxies of the same
        # contrast rank (models.contrast_rank) and named back afterwards.
        proxies = None
        if elements is not None:
            from models.contrast_rank import proxy_elements

            proxies = proxy_elements(elements, self.config.elements)
            if all(k == v for k, v in proxies.items()):
                proxies = None
            else:
                logger.info(
                    "elements %s classified as their contrast-rank proxies %s",
                    list(elements),
                    proxies,
                )
        net_elements = elements if proxies is None else [proxies[e] for e in elements]
        if float(np.ptp(volume)) == 0.0:
            # A constant volume has no atoms; the networks would answer with their biases.
            logger.warning("volume: constant (%g everywhere): no atoms", float(volume.flat[0]))
            return PannPrediction(
                positions=np.zeros((0, 3)),
                elements=[],
                probabilities=np.zeros((0, len(self.config.classes)), dtype=np.float32),
                classes=self.config.classes,
                refined=volume if keep_refined else None,
                extra={"n_candidates": 0, "n_rejected": 0, "constant_volume": True},
            )
        work, work_sampling, spacing = resample_volume(volume, sampling, self.config.sampling)
        refined = self.restore_volume(work)
        cand = self.candidates(refined, work_sampling)
        traced = np.asarray(cand.positions, dtype=np.float64).reshape(-1, 3)
        probs = self.classify(refined, work, traced, work_sampling, net_elements)
        positions = to_input_positions(traced, work_sampling, spacing)
        classes = self.config.classes
        labels = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
        keep = np.array([classes[i] != NOT_AN_ATOM for i in labels], dtype=bool)
        positions, symbols = positions[keep], [classes[i] for i in labels[keep]]
        kept = probs[keep]
        extra = {"n_candidates": int(len(probs)), "n_rejected": int((~keep).sum())}
        if work is not volume:
            extra["resampled_to"] = float(work_sampling)
        if proxies is not None:
            # Name the proxies' columns and labels back: classes = the elements present (in the
            # weights' class order of their proxies) + "none".
            back = {v: k for k, v in proxies.items()}
            columns = [i for i, c in enumerate(classes) if c in back or c == NOT_AN_ATOM]
            classes = tuple(back.get(classes[i], classes[i]) for i in columns)
            kept = kept[:, columns]
            symbols = [back[s] for s in symbols]
            extra["contrast_proxies"] = dict(proxies)
        from models.refine import missing_measurement, refine_sample

        missing = ["tilt_series"] if measurement is None else missing_measurement(measurement)
        if self.config.refine and len(positions):
            if missing:
                # Not silent: a warning, and the reason in the prediction (aet-bench writes it
                # into the results record).
                reason = (
                    f"refine: no {', '.join(missing)}; atoms not refined against the measurement"
                )
                logger.warning("%s", reason)
                extra["skipped_steps"] = [reason]
            else:
                config = refine_config()
                result = refine_sample(measurement, positions, symbols, config=config)
                positions = result.positions
                extra["cross_sections"] = result.cross_sections
                if result.dose_estimated is not None:
                    extra["refine_dose_estimated"] = result.dose_estimated
        if self.config.reassign and len(positions):
            if missing:
                groups = _mixed_groups(elements)
                if groups:
                    logger.warning(
                        "elements %s: stage 2 and the volume alone cannot tell them apart (Z within "
                        "3); give the tilt series (pann predict --data STORE) to name them from "
                        "the measurement",
                        groups,
                    )
                symbols, kept = self._species_from_volume(
                    refined, traced[keep], work_sampling, symbols, kept, elements, extra, classes
                )
            else:
                positions, symbols, kept = self._reassign(
                    measurement, positions, symbols, kept, elements, extra, classes
                )
        return PannPrediction(
            positions=positions,
            elements=symbols,
            probabilities=kept,
            classes=classes,
            refined=refined if keep_refined else None,
            extra=extra,
        )

    def _species_prior(self, probabilities, present, classes=None):
        """Stage 2's probabilities over the elements ``present`` (by increasing Z), renormalised;
        ``classes``: the probabilities' columns (the weights' classes when ``None``)."""
        classes = list(self.config.classes if classes is None else classes)
        columns = [classes.index(e) for e in present]
        prior = np.asarray(probabilities, dtype=np.float64)[:, columns]
        return prior, columns

    def _apply_species(self, result, symbols, probabilities, extra, classes=None):
        """Rows keep their element total, shared among the elements by the posterior."""
        probabilities = np.array(probabilities, copy=True)
        classes = list(self.config.classes if classes is None else classes)
        columns = [classes.index(e) for e in result.classes]
        mass = probabilities[:, columns].sum(axis=1, keepdims=True)
        probabilities[:, columns] = mass * result.posteriors
        extra.update(
            base_elements=list(symbols),
            species_changed=int(result.changed.sum()),
            species_groups=[list(g) for g in result.groups if len(g) >= 2],
            species_classes=list(result.classes),
            species_posteriors=result.posteriors,
            species_outlier=None if result.fit is None else result.fit.outlier,
            species_log_cross_sections=result.log_cross_sections,
            species_standard_errors=result.standard_errors,
            species_scale=None if result.fit is None else float(result.fit.offset),
            species_width=None if result.fit is None else float(result.fit.width),
        )
        return list(result.elements), probabilities

    def _present(self, elements, symbols) -> list[str]:
        from ase.data import atomic_numbers

        present = list(elements) if elements is not None else list(self.config.elements)
        return sorted(set(present) | set(symbols), key=atomic_numbers.__getitem__)

    def _reassign(
        self, measurement, positions, symbols, probabilities, elements, extra, classes=None
    ):
        """The species step from the tilt series (``config.reassign``): stage 2 is the prior."""
        from models.species_refine import reassign_species

        present = self._present(elements, symbols)
        if len(present) < 2 or not len(symbols):
            return positions, symbols, probabilities
        prior, _ = self._species_prior(probabilities, present, classes)
        result = reassign_species(
            measurement,
            positions,
            symbols,
            present=present,
            prior=prior,
            refine_config=refine_config(),
        )
        symbols, probabilities = self._apply_species(
            result, symbols, probabilities, extra, classes
        )
        if result.positions is not None:
            positions = result.positions
        return positions, symbols, probabilities

    def _species_from_volume(
        self, volume, positions, sampling, symbols, probabilities, elements, extra, classes=None
    ):
        """The species step without a tilt series: the mixture on the volume's intensities."""
        from models.species_refine import species_from_volume

        present = self._present(elements, symbols)
        if len(present) < 2 or not len(symbols):
            return symbols, probabilities
        prior, _ = self._species_prior(probabilities, present, classes)
        result = species_from_volume(
            volume, positions, sampling, symbols, present=present, prior=prior
        )
        extra["species_source"] = "volume"
        return self._apply_species(result, symbols, probabilities, extra, classes)

    # ------------------------------------------------------------------ persistence
    def save(self, run_dir: str | Path) -> Path:
        """Write ``pann.pt`` (weights + config + normalisation) and ``config.json`` to ``run_dir``."""
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        payload = {
            "version": CHECKPOINT_VERSION,
            "config": self.config.to_dict(),
            "stage1": self.stage1.state_dict(),
            "stage2": self.stage2.state_dict() if self.stage2 is not None else None,
            "stage2_in_features": getattr(self.stage2, "in_features", None),
            "feature_mean": None
            if self.feature_mean is None
            else np.asarray(self.feature_mean).tolist(),
            "feature_std": None
            if self.feature_std is None
            else np.asarray(self.feature_std).tolist(),
            "history": self.history,
        }
        path = run_dir / "pann.pt"
        save_atomic(payload, path)
        write_text_atomic(run_dir / "config.json", json.dumps(self.config.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> PannModel:
        """Load from a run directory (or a ``pann.pt`` file); a corrupted file gives a clear error."""
        path = weights_file(run_dir, "pann.pt")
        # weights_only=True inside: a crafted file is refused without running any of its code.
        payload = load_checkpoint(path, what="PANN checkpoint")
        try:
            config = PannConfig.from_dict(payload["config"])
            model = cls(config)
            model.stage1.load_state_dict(payload["stage1"])
            if payload.get("stage2") is not None:
                model.stage2 = build_stage2(config, payload["stage2_in_features"])
                model.stage2.load_state_dict(payload["stage2"])
        except CHECKPOINT_ERRORS as exc:
            first = (str(exc).strip().splitlines() or [""])[0]
            raise ValueError(
                f"weights={str(path)!r}: not a valid PANN checkpoint ({type(exc).__name__}: {first})"
            ) from None
        if payload.get("feature_mean") is not None:
            model.feature_mean = np.asarray(payload["feature_mean"], dtype=np.float32)
            model.feature_std = np.asarray(payload["feature_std"], dtype=np.float32)
        model.history = payload.get("history", {})
        return model


def _slab_patch(shape, config: PannConfig) -> tuple[int, int, int]:
    """Inference patches: the training slabs (full z/x extent, ``slab`` along y).

    Stage 1 normalises features per patch (instance norm), so inference patches keep the size the
    network was trained on.
    """
    z, y, x = shape
    return (z, min(y, config.slab), x)


def build_stage1(config: PannConfig):
    from models.resunet import GlobalLocalResUNet

    torch.manual_seed(config.seed)
    return GlobalLocalResUNet(
        in_channels=1,
        out_channels=1,
        base_channels=config.base_channels,
        levels=config.levels,
        global_size=config.global_size,
    )


def build_stage2(config: PannConfig, in_features: int):
    from models.species import SpeciesTransformer

    torch.manual_seed(config.seed)
    model = SpeciesTransformer(
        in_features,
        len(config.classes),
        hidden=config.hidden,
        heads=config.heads,
        layers=config.layers,
    )
    model.in_features = in_features
    return model
