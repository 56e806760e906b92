"""Noise models of a low-dose HAADF-STEM tilt series: named, parameterised, composable.

Each model is a small frozen dataclass holding its parameters (with units) and applied with an
explicit :class:`numpy.random.Generator` — in the spirit of MONAI's ``RandGaussianNoise`` and
abTEM's ``noise.py``. A model belongs to one *stage* of the measurement:

``angles``
    changes the *true* tilt angles the object was imaged at; the recorded (nominal) angles are
    never touched: ``tilt_error``.
``expected``
    acts on the expected counts before shot noise, in this fixed order: ``misalignment``,
    ``rotation``, ``drift``, ``scan_jitter`` (geometric distortions of the object's image),
    ``beam_current`` (scales the signal), ``background`` (adds a constant).
``shot``
    ``poisson``: the counts actually detected.
``detector``
    ``gain`` then ``read``.

:class:`NoiseChain` sorts the models into that order whatever order they were given in. Draws
happen in that order too, each model drawing all its random numbers at once (documented per
model), so a given Generator state always gives the same output: ``true_angles`` draws first
(the angle stage), then ``apply`` draws expected → shot → detector.

Specs are strings ``"name:key=value,key=value"`` (:func:`parse_noise`), e.g.
``"poisson"``, ``"read:sigma=2"``, ``"misalignment:sigma=0.5"``, ``"tilt_error:sigma=0.3,offset=1"``.
``"none"`` alone means no noise at all.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from simgen.forward.shift import fourier_shift  # re-exported: one shift for numpy and torch
from simgen.registry import Spec, registry
from simgen.registry import param as _param

__all__ = [
    "NOISE_MODELS",
    "STAGES",
    "NoiseModel",
    "NoiseChain",
    "parse_noise",
    "TiltError",
    "BeamCurrent",
    "Background",
    "Drift",
    "ScanJitter",
    "Misalignment",
    "Rotation",
    "Poisson",
    "Gain",
    "ReadNoise",
    "NoNoise",
    "fourier_shift",
]

logger = logging.getLogger(__name__)

STAGES = ("angles", "expected", "shot", "detector")


@dataclass(frozen=True)
class NoiseModel:
    """Base class: a named noise model of one stage with numeric parameters."""

    name: ClassVar[str] = ""
    stage: ClassVar[str] = ""
    rank: ClassVar[int] = 0  # order within the stage

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            low, high = f.metadata.get("min"), f.metadata.get("max")
            ok = (
                isinstance(value, (int, float))
                and not isinstance(value, bool)
                and math.isfinite(value)
            )
            ok = ok and (low is None or value >= low) and (high is None or value <= high)
            if not ok:
                raise ValueError(
                    f"noise {self.name!r}: {f.name}={value!r}: expected {_allowed_range(f)}"
                )

    # --- the three hooks; a model overrides the one(s) of its stage ---------------------------

    def true_angles(self, angles_deg: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """True angles (degrees) from ``angles_deg``; identity except for the angles stage."""
        return angles_deg

    def __call__(
        self, counts: np.ndarray, rng: np.random.Generator, *, sampling: float, dose: float
    ) -> np.ndarray:
        """Apply the model to ``counts`` ``(A, P, P)``; identity for the angles stage."""
        return counts

    def background(self, dose: float, sampling: float | None = None) -> float:
        """Expected constant counts per pixel this model adds (0 for all but ``background``)."""
        return 0.0

    def apply_recorded(
        self, counts: np.ndarray, rng: np.random.Generator, *, sampling: float, dose: float
    ) -> tuple[np.ndarray, dict]:
        """Like calling the model, and also return what it drew that a pipeline may estimate.

        The record maps names to arrays (e.g. ``"shifts"``: the (A, 2) translations in Å); the
        draws are exactly those of a plain call.
        """
        return self(counts, rng, sampling=sampling, dose=dose), {}

    # --- records ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        return {"name": self.name, "stage": self.stage, **dataclasses.asdict(self)}

    def spec(self) -> str:
        """The canonical spec string, parsed back by :func:`parse_noise` to an equal model."""
        params = dataclasses.asdict(self)
        if not params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v!r}" for k, v in params.items())

    def __str__(self) -> str:
        return self.spec()


def _allowed_range(f: dataclasses.Field) -> str:
    low, high = f.metadata.get("min"), f.metadata.get("max")
    unit = f.metadata.get("unit", "")
    bounds = []
    if low is not None:
        bounds.append(f">= {low}")
    if high is not None:
        bounds.append(f"<= {high}")
    text = "a finite number" + (" " + " and ".join(bounds) if bounds else "")
    return text + (f" ({unit})" if unit else "")


# ------------------------------------------------------------------------------------------------
# angles stage
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TiltError(NoiseModel):
    """Tilt-angle error: true angle = nominal + ``offset`` + N(0, ``sigma``²), degrees.

    Draws ``rng.normal(0, sigma, A)`` (one per projection, in the order of the angles) when
    ``sigma > 0``.
    """

    name: ClassVar[str] = "tilt_error"
    stage: ClassVar[str] = "angles"
    sigma: float = _param(
        0.5, "degrees", "standard deviation of the random tilt error per projection"
    )
    offset: float = _param(0.0, "degrees", "constant offset of all true angles", minimum=None)

    def true_angles(self, angles_deg, rng):
        angles = np.asarray(angles_deg, dtype=np.float64) + self.offset
        if self.sigma > 0:
            angles = angles + rng.normal(0.0, self.sigma, size=angles.shape)
        return angles


# ------------------------------------------------------------------------------------------------
# expected-counts stage
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Misalignment(NoiseModel):
    """Per-projection rigid translation, (dy, dx) ~ N(0, ``sigma``²) Å each.

    Applied exactly, as a sub-pixel Fourier shift (:func:`fourier_shift`): a stage shift moves the
    image, it does not blur it. Draws ``rng.normal(0, sigma, (A, 2))`` — columns (dy, dx) — see :meth:`draw`.
    """

    name: ClassVar[str] = "misalignment"
    stage: ClassVar[str] = "expected"
    rank: ClassVar[int] = 0
    sigma: float = _param(1.0, "Å", "standard deviation of the translation along each image axis")

    def draw(self, n_angles: int, rng: np.random.Generator) -> np.ndarray:
        """The (A, 2) translations (dy, dx) in Å."""
        return rng.normal(0.0, self.sigma, size=(n_angles, 2))

    def __call__(self, counts, rng, *, sampling, dose):
        return self.apply_recorded(counts, rng, sampling=sampling, dose=dose)[0]

    def apply_recorded(self, counts, rng, *, sampling, dose):
        shifts = self.draw(counts.shape[0], rng)
        return fourier_shift(counts, shifts / sampling), {"shifts": shifts}


@dataclass(frozen=True)
class Rotation(NoiseModel):
    """Per-projection in-plane rotation error about the image centre, N(0, ``sigma``²) degrees.

    Draws ``rng.normal(0, sigma, A)``.
    """

    name: ClassVar[str] = "rotation"
    stage: ClassVar[str] = "expected"
    rank: ClassVar[int] = 1
    sigma: float = _param(
        0.5, "degrees", "standard deviation of the in-plane rotation per projection"
    )

    def draw(self, n_angles: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sigma, size=n_angles)

    def __call__(self, counts, rng, *, sampling, dose):
        from scipy import ndimage

        angles = self.draw(counts.shape[0], rng)
        out = np.empty_like(counts)
        for k, angle in enumerate(angles):
            out[k] = ndimage.rotate(
                counts[k], angle, reshape=False, order=1, mode="constant", cval=0.0
            )
        return out


@dataclass(frozen=True)
class Drift(NoiseModel):
    """Slow sample drift during each scan: a smooth warp that grows along the scan (rows).

    The displacement of row ``r`` (scan time ``t = r / (P − 1)`` from 0 to 1) is
    ``d(t) = v·t + w·t²`` with velocity ``v`` and acceleration ``w`` drawn per projection,
    (dy, dx) each ~ N(0, ``amplitude``² / 2), so the displacement at the end of a frame has a
    standard deviation of about ``amplitude`` Å per axis. Draws ``rng.normal(0, 1, (A, 2, 2))``
    (projection, [v, w], [dy, dx]), scaled by ``amplitude / √2``.
    """

    name: ClassVar[str] = "drift"
    stage: ClassVar[str] = "expected"
    rank: ClassVar[int] = 2
    amplitude: float = _param(1.0, "Å", "typical displacement at the end of one frame")

    def draw(self, n_angles: int, rng: np.random.Generator) -> np.ndarray:
        """(A, 2, 2) coefficients [projection, (velocity, acceleration), (dy, dx)] in Å."""
        return rng.normal(0.0, 1.0, size=(n_angles, 2, 2)) * (self.amplitude / math.sqrt(2.0))

    def __call__(self, counts, rng, *, sampling, dose):
        return self.apply_recorded(counts, rng, sampling=sampling, dose=dose)[0]

    def apply_recorded(self, counts, rng, *, sampling, dose):
        """The drifted images, and ``"shifts"``: each frame's mean displacement (A, 2) Å (dy, dx)."""
        from scipy import ndimage

        coefficients = self.draw(counts.shape[0], rng)
        n_rows, n_cols = counts.shape[1:]
        t = np.arange(n_rows) / max(n_rows - 1, 1)
        mean_shift = coefficients[:, 0] * t.mean() + coefficients[:, 1] * (t**2).mean()
        rows, cols = np.meshgrid(
            np.arange(n_rows, dtype=np.float64), np.arange(n_cols, dtype=np.float64), indexing="ij"
        )
        out = np.empty_like(counts)
        for k in range(counts.shape[0]):
            displacement = (
                np.outer(t, coefficients[k, 0]) + np.outer(t**2, coefficients[k, 1])
            ) / sampling
            # the pixel scanned at row r shows the object point displaced by -d(t_r)
            coordinates = [rows - displacement[:, 0:1], cols - displacement[:, 1:2]]
            out[k] = ndimage.map_coordinates(
                counts[k], coordinates, order=1, mode="constant", cval=0.0
            )
        return out, {"shifts": mean_shift}


@dataclass(frozen=True)
class ScanJitter(NoiseModel):
    """Scan-line jitter: each row of each projection shifted along x by N(0, ``sigma``²) Å.

    Draws ``rng.normal(0, sigma, (A, P))``.
    """

    name: ClassVar[str] = "scan_jitter"
    stage: ClassVar[str] = "expected"
    rank: ClassVar[int] = 3
    sigma: float = _param(0.2, "Å", "standard deviation of the x shift of each scan line")

    def draw(self, n_angles: int, n_rows: int, rng: np.random.Generator) -> np.ndarray:
        return rng.normal(0.0, self.sigma, size=(n_angles, n_rows))

    def __call__(self, counts, rng, *, sampling, dose):
        from scipy import ndimage

        shifts = self.draw(counts.shape[0], counts.shape[1], rng) / sampling
        n_rows, n_cols = counts.shape[1:]
        rows, cols = np.meshgrid(
            np.arange(n_rows, dtype=np.float64), np.arange(n_cols, dtype=np.float64), indexing="ij"
        )
        out = np.empty_like(counts)
        for k in range(counts.shape[0]):
            coordinates = [rows, cols - shifts[k][:, None]]
            out[k] = ndimage.map_coordinates(
                counts[k], coordinates, order=1, mode="constant", cval=0.0
            )
        return out


@dataclass(frozen=True)
class BeamCurrent(NoiseModel):
    """Beam-current fluctuation between projections: counts × (1 + N(0, ``sigma``²)), ≥ 0.

    Draws ``rng.normal(0, sigma, A)``; the factors are clipped at 0.
    """

    name: ClassVar[str] = "beam_current"
    stage: ClassVar[str] = "expected"
    rank: ClassVar[int] = 4
    sigma: float = _param(0.05, "relative", "relative standard deviation of the beam current")

    def draw(self, n_angles: int, rng: np.random.Generator) -> np.ndarray:
        return np.clip(1.0 + rng.normal(0.0, self.sigma, size=n_angles), 0.0, None)

    def __call__(self, counts, rng, *, sampling, dose):
        factors = self.draw(counts.shape[0], rng).astype(counts.dtype)
        return counts * factors[:, None, None]


@dataclass(frozen=True)
class Background(NoiseModel):
    """Constant background: ``counts`` per pixel plus ``fraction`` of the incident electrons.

    Expected background per pixel = ``counts + fraction × dose × sampling²`` (``fraction``: the
    share of the beam per unit area that reaches the detector as a flat background, e.g. from a
    support film). No random draws.
    """

    name: ClassVar[str] = "background"
    stage: ClassVar[str] = "expected"
    rank: ClassVar[int] = 5
    counts: float = _param(1.0, "counts per pixel", "dose-independent background")
    fraction: float = _param(
        0.0, "per e/Å² per Å²", "background that scales with dose × pixel area", maximum=1.0
    )

    def background(self, dose, sampling=None):
        if self.fraction > 0 and sampling is None:
            raise ValueError(
                f"noise 'background': fraction={self.fraction!r} needs sampling=: expected the pixel size in Å"
            )
        extra = self.fraction * dose * sampling**2 if self.fraction > 0 else 0.0
        return float(self.counts + extra)

    def __call__(self, counts, rng, *, sampling, dose):
        return counts + np.asarray(self.background(dose, sampling), dtype=counts.dtype)


# ------------------------------------------------------------------------------------------------
# shot and detector stages
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Poisson(NoiseModel):
    """Shot noise: detected counts ~ Poisson(expected counts). Draws ``rng.poisson`` per pixel."""

    name: ClassVar[str] = "poisson"
    stage: ClassVar[str] = "shot"

    def __call__(self, counts, rng, *, sampling, dose):
        return rng.poisson(np.clip(counts, 0.0, None)).astype(np.float32)


@dataclass(frozen=True)
class Gain(NoiseModel):
    """Detector gain: counts × ``value`` × (1 + N(0, ``sigma``²) per pixel, fixed for the series).

    ``sigma`` is a fixed-pattern (per-pixel) gain non-uniformity, drawn once per tilt series as
    ``rng.normal(0, sigma, (P, P))`` when ``sigma > 0``. The mean gain ``value`` also scales the
    expected background (:meth:`NoiseChain.background`).
    """

    name: ClassVar[str] = "gain"
    stage: ClassVar[str] = "detector"
    rank: ClassVar[int] = 0
    value: float = _param(1.0, "output units per count", "mean detector gain")
    sigma: float = _param(0.0, "relative", "per-pixel gain non-uniformity")

    def __call__(self, counts, rng, *, sampling, dose):
        gain = np.float32(self.value)
        if self.sigma > 0:
            pattern = 1.0 + rng.normal(0.0, self.sigma, size=counts.shape[1:])
            return (counts * (gain * pattern.astype(np.float32))[None]).astype(np.float32)
        return (counts * gain).astype(np.float32)


@dataclass(frozen=True)
class ReadNoise(NoiseModel):
    """Gaussian read noise: counts + N(0, ``sigma``²) per pixel (may go below 0, as measured).

    Draws ``rng.normal(0, sigma, (A, P, P))``.
    """

    name: ClassVar[str] = "read"
    stage: ClassVar[str] = "detector"
    rank: ClassVar[int] = 1
    sigma: float = _param(1.0, "counts per pixel", "standard deviation of the read noise")

    def __call__(self, counts, rng, *, sampling, dose):
        noise = rng.normal(0.0, self.sigma, size=counts.shape)
        return (counts + noise).astype(np.float32)


@dataclass(frozen=True)
class NoNoise(NoiseModel):
    """No noise: the expected counts unchanged. Only valid alone."""

    name: ClassVar[str] = "none"
    stage: ClassVar[str] = "none"


NOISE_MODELS: dict[str, type[NoiseModel]] = {
    model.name: model
    for model in (
        TiltError,
        Misalignment,
        Rotation,
        Drift,
        ScanJitter,
        BeamCurrent,
        Background,
        Poisson,
        Gain,
        ReadNoise,
        NoNoise,
    )
}
"""Name → noise model class. Each class documents its parameters, defaults and units."""


#: The noise models in the spec registry (:mod:`simgen.registry`): ``simgen list noise`` and
#: ``--noise`` parse and print from it.
NOISE_REGISTRY = registry(
    "noise", "noise models (--noise NAME[:k=v,...], repeatable; datasets.yaml noise_models)"
)
for _cls in NOISE_MODELS.values():
    NOISE_REGISTRY.register(_cls.name, _cls)


def describe_models() -> dict[str, dict[str, dict]]:
    """``{name: {param: {"default", "unit", "doc"}}}`` for help texts and docs."""
    return {
        name: {p.name: {"default": p.default, "unit": p.unit, "doc": p.doc} for p in entry.params}
        for name, entry in NOISE_REGISTRY.models.items()
    }


def parse_noise(spec: str) -> NoiseModel:
    """Parse ``"name"`` or ``"name:key=value,key=value"`` into a noise model.

    Raises
    ------
    ValueError
        For an unknown model name or key, or a value that is not a finite number in the allowed
        range; the message names the model, the key, the value and what is allowed.
    """
    return NOISE_REGISTRY.parse(spec)


class NoiseChain:
    """An ordered list of noise models, applied stage by stage with one Generator.

    Parameters
    ----------
    models
        Noise models (any order); they are sorted into stage order angles → expected → shot →
        detector (and the documented order within a stage). Each model may appear once.
    """

    def __init__(self, models: Sequence[NoiseModel] = ()):
        models = list(models)
        names = [m.name for m in models]
        if "none" in names:
            if len(models) > 1:
                raise ValueError(
                    f"noise={names}: expected 'none' alone, not combined with other models"
                )
            models = []
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"noise={names}: expected each model at most once, {duplicates} repeated"
            )
        self.models: tuple[NoiseModel, ...] = tuple(
            sorted(models, key=lambda m: (STAGES.index(m.stage), m.rank))
        )

    @classmethod
    def from_specs(cls, specs: Sequence[str | Spec] | str | Spec) -> NoiseChain:
        """Build a chain from specs: parsed :class:`simgen.registry.Spec` objects (their models are
        used as they are) or strings (see :func:`parse_noise`); ``["none"]`` = no noise."""
        if isinstance(specs, (str, Spec)):
            specs = [specs]
        return cls([NOISE_REGISTRY.build(spec) for spec in specs])

    def __repr__(self) -> str:
        return f"NoiseChain({[m.spec() for m in self.models]})"

    def __len__(self) -> int:
        return len(self.models)

    def true_angles(self, nominal_deg, rng: np.random.Generator) -> np.ndarray:
        """The angles (degrees, float64) the object was actually imaged at; ``nominal_deg`` unchanged."""
        angles = np.array(nominal_deg, dtype=np.float64, copy=True)
        if angles.ndim != 1 or angles.size == 0 or not np.all(np.isfinite(angles)):
            raise ValueError(
                f"angles={nominal_deg!r}: expected a non-empty 1D array of finite degrees"
            )
        for model in self.models:
            if model.stage == "angles":
                angles = model.true_angles(angles, rng)
        return angles

    def apply(
        self,
        expected_counts,
        rng: np.random.Generator,
        *,
        sampling: float,
        dose: float,
        record: dict | None = None,
    ) -> np.ndarray:
        """Measured counts from expected counts ``(A, P, P)``; returns float32.

        ``record``, when given, receives what the geometric models drew, for comparison with what
        an alignment estimates: ``record["shifts"]`` the (A, 2) rigid translation (dy, dx) in Å of
        each projection (``misalignment`` plus the mean displacement of ``drift``), zeros when
        neither is in the chain. The draws are the same with or without it.

        Slightly negative expected counts (ringing of an FFT image model) are accepted: the
        ``expected`` stage clips at 0 after each model and ``poisson`` draws from ``max(λ, 0)``.

        ``sampling`` is the pixel size in Å (for distortions given in Å) and ``dose`` the dose in
        e/Å² per projection (for a dose-dependent background).
        """
        counts = np.asarray(expected_counts)
        if counts.ndim != 3 or counts.size == 0:
            raise ValueError(
                f"expected_counts.shape={counts.shape}: expected a non-empty (A, P, P) array"
            )
        if not np.all(np.isfinite(counts)):
            raise ValueError("expected_counts: expected finite values, found NaN or inf")
        if not (
            isinstance(sampling, (int, float, np.floating))
            and np.isfinite(sampling)
            and sampling > 0
        ):
            raise ValueError(f"sampling={sampling!r}: expected a positive pixel size in Å")
        if not (isinstance(dose, (int, float, np.floating)) and np.isfinite(dose) and dose > 0):
            raise ValueError(f"dose={dose!r}: expected a positive dose in e/Å² per projection")
        counts = np.array(counts, dtype=np.float32, copy=True)
        shifts = np.zeros((counts.shape[0], 2))
        for model in self.models:
            if model.stage == "angles":
                continue
            counts, drawn = model.apply_recorded(
                counts, rng, sampling=float(sampling), dose=float(dose)
            )
            if "shifts" in drawn:
                shifts = shifts + drawn["shifts"]
            if model.stage == "expected":
                np.maximum(counts, 0.0, out=counts)  # interpolation never makes counts negative
        if record is not None:
            record["shifts"] = shifts
        return counts.astype(np.float32, copy=False)

    def background(self, dose: float, sampling: float | None = None) -> float:
        """Expected background counts per pixel in the output (after beam current mean 1 and gain).

        Subtract it before normalising by the dose. ``sampling`` (Å) is needed only for a
        ``background`` with ``fraction > 0``.
        """
        level = sum(model.background(dose, sampling) for model in self.models)
        for model in self.models:
            if isinstance(model, Gain):
                level *= model.value
        return float(level)

    def alignment_prior(self) -> dict:
        """The spread of what an alignment estimates, known from the chain's parameters.

        Returns
        -------
        dict
            ``shift_sigma``: standard deviation in Å per axis of a projection's rigid shift,
            ``√(σ_misalignment² + a_drift² (1/4 + 1/9) / 2)`` (the mean displacement of a drift
            frame is ``v/2 + w/3``, ``v, w ~ N(0, a²/2)``); ``angle_sigma``: standard deviation
            in degrees of a tilt angle about the recorded one (``tilt_error`` ``sigma``; its
            common ``offset`` is a rigid rotation, not estimated). 0 for what the chain does not
            perturb.
        """
        shift_var, angle_var = 0.0, 0.0
        for model in self.models:
            if isinstance(model, Misalignment):
                shift_var += model.sigma**2
            elif isinstance(model, Drift):
                shift_var += model.amplitude**2 * (1 / 4 + 1 / 9) / 2
            elif isinstance(model, TiltError):
                angle_var += model.sigma**2
        return {"shift_sigma": math.sqrt(shift_var), "angle_sigma": math.sqrt(angle_var)}

    def to_dict(self) -> dict:
        """A record of every model and parameter, in application order, for the store."""
        return {
            "models": [m.to_dict() for m in self.models],
            "specs": [m.spec() for m in self.models],
        }

    def specs(self) -> list[str]:
        """Canonical spec strings in application order (``[]`` for no noise)."""
        return [m.spec() for m in self.models]
