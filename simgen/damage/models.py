"""The damage models (``knock_on``, ``surface_diffusion``), their registry in :mod:`simgen.registry`
and the parser of their ``name:k=v`` specs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from simgen.damage.cross_section import (
    BARN,
    DISPLACEMENT_THRESHOLDS,
    mckinley_feshbach_cross_section,
)
from simgen.damage.events import DamageEvent, _State
from simgen.registry import param, registry

__all__ = [
    "KnockOn",
    "SurfaceDiffusion",
    "DAMAGE_MODELS",
    "DAMAGE_REGISTRY",
    "describe_models",
    "parse_damage",
]

logger = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------
# Models
# ----------------------------------------------------------------------------------------------


def _check_positive(name: str, value: float, *, allow_zero: bool = True) -> None:
    ok = np.isfinite(value) and (value >= 0 if allow_zero else value > 0)
    if not ok:
        expected = "a non-negative number" if allow_zero else "a positive number"
        raise ValueError(f"{name}={value!r}: expected {expected}")


@dataclass(frozen=True)
class KnockOn:
    """Knock-on displacement of surface atoms (McKinley–Feshbach cross-section).

    Each surface atom i (CN < ``cn_bulk``) is displaced during a projection of dose D (e/Å²) with
    probability ``1 − exp(−σ_i D)``, σ_i = ``cross_section_scale`` ·
    :func:`mckinley_feshbach_cross_section` (in Å²) at its site threshold

        E_d,i = threshold_scale · E_d(bulk, element) · (CN_i / cn_bulk) ** exponent,

    a bond-counting estimate (the energy to free an atom grows with the bonds it must break; a
    surface atom with half the bulk bonds has about half the threshold — the same reason the
    surface sputtering threshold is far below the bulk one, Egerton et al. 2004). CN is clamped
    to ≥ 1.

    A displaced atom is sputtered (removed) or hops to a free neighbouring site, set by
    ``sputter``: ``"exit"`` (default) sputters atoms on the beam-exit surface — whose outward
    normal points along the beam, since the recoil goes forward — and lets the others hop;
    ``"always"`` / ``"never"`` sputter all / none. Bulk atoms (CN ≥ ``cn_bulk``) are not
    displaced: at room temperature the self-interstitial of a Frenkel pair is mobile and, in a
    particle a few nm across, recombines or reaches the surface within the dwell time; this model
    leaves that out.

    Parameters
    ----------
    energy
        Beam kinetic energy in eV.
    threshold_scale
        Multiplies every threshold (bulk and surface).
    exponent
        Exponent p of the coordination scaling (0: surface = bulk threshold).
    cn_bulk
        Bulk coordination number (12 for fcc, 8 for bcc, 4 for diamond-cubic Si).
    cross_section_scale
        Multiplies the cross-section (0 switches the model off; > 1 accelerates damage).
    sputter
        ``"exit"``, ``"always"`` or ``"never"``.
    thresholds
        Per-element overrides of the bulk thresholds in eV, e.g. ``{"Pt": 30.0}``
        (``threshold_Pt=30`` in a spec).
    """

    energy: float = param(200e3, "eV", minimum=None)
    threshold_scale: float = param(1.0, minimum=None)
    exponent: float = param(1.0, minimum=None)
    cn_bulk: int = param(12, minimum=None)
    cross_section_scale: float = param(1.0, minimum=None)
    sputter: str = param("exit", minimum=None, choices=("exit", "always", "never"))
    thresholds: dict = param({}, "eV", minimum=None, placeholder="Element")

    name: ClassVar[str] = "knock_on"
    SPUTTER_RULES: ClassVar[tuple[str, ...]] = ("exit", "always", "never")

    def __post_init__(self) -> None:
        _check_positive("energy", self.energy, allow_zero=False)
        _check_positive("threshold_scale", self.threshold_scale, allow_zero=False)
        _check_positive("exponent", self.exponent)
        _check_positive("cross_section_scale", self.cross_section_scale)
        if isinstance(self.cn_bulk, bool) or int(self.cn_bulk) != self.cn_bulk or self.cn_bulk < 1:
            raise ValueError(
                f"cn_bulk={self.cn_bulk!r}: expected a positive integer coordination number"
            )
        if self.sputter not in self.SPUTTER_RULES:
            raise ValueError(
                f"sputter={self.sputter!r}: expected one of {', '.join(self.SPUTTER_RULES)}"
            )
        from ase.data import atomic_numbers

        for symbol, value in self.thresholds.items():
            if symbol not in atomic_numbers:
                raise ValueError(
                    f"threshold_{symbol}={value!r}: expected a chemical symbol after 'threshold_'"
                )
            _check_positive(f"threshold_{symbol}", value, allow_zero=False)

    def bulk_threshold(self, symbol: str) -> float:
        """Bulk displacement threshold (eV) of an element, before ``threshold_scale``."""
        if symbol in self.thresholds:
            return float(self.thresholds[symbol])
        if symbol not in DISPLACEMENT_THRESHOLDS:
            raise ValueError(
                f"element={symbol!r}: no displacement threshold tabulated (known: "
                f"{', '.join(DISPLACEMENT_THRESHOLDS)}); give one as knock_on:threshold_{symbol}=EV"
            )
        return DISPLACEMENT_THRESHOLDS[symbol]

    def site_threshold(self, symbol: str, coordination) -> np.ndarray:
        """Displacement threshold (eV) of an atom of ``symbol`` with coordination ``coordination``."""
        cn = np.clip(np.asarray(coordination, dtype=np.float64), 1.0, float(self.cn_bulk))
        return (
            self.threshold_scale
            * self.bulk_threshold(symbol)
            * (cn / self.cn_bulk) ** self.exponent
        )

    def cross_section(self, numbers: np.ndarray, coordination: np.ndarray) -> np.ndarray:
        """σ in barn for atoms of atomic numbers ``numbers`` at coordinations ``coordination``."""
        from ase.data import chemical_symbols

        numbers = np.asarray(numbers)
        coordination = np.asarray(coordination)
        sigma = np.zeros(numbers.shape, dtype=np.float64)
        if self.cross_section_scale == 0:
            return sigma
        for z in np.unique(numbers):
            mask = numbers == z
            threshold = self.site_threshold(chemical_symbols[z], coordination[mask])
            sigma[mask] = mckinley_feshbach_cross_section(
                self.energy, threshold, np.full(threshold.shape, z)
            )
        return self.cross_section_scale * sigma

    def active(self, numbers: np.ndarray) -> bool:
        """Whether any atom of these elements could be displaced (at the lowest site threshold)."""
        if self.cross_section_scale == 0:
            return False
        elements = np.unique(numbers)
        return bool(np.any(self.cross_section(elements, np.ones(elements.shape)) > 0))

    def step(
        self,
        state: _State,
        step: int,
        projection: int,
        dose: float,
        beam: np.ndarray,
        rng: np.random.Generator,
    ) -> list[DamageEvent]:
        if dose <= 0:
            return []
        cn = state.coordination()
        candidates = np.flatnonzero(state.present & (cn < self.cn_bulk))
        if len(candidates) == 0:
            return []
        sigma = self.cross_section(state.numbers[candidates], cn[candidates])
        if not np.any(sigma > 0):
            return []
        probability = -np.expm1(-sigma * BARN * dose)
        hit = candidates[rng.random(len(candidates)) < probability]
        # Whether a hit atom is sputtered is decided on the structure at the start of the
        # projection, like the hits themselves; side facets (normal ⟂ beam) hop.
        if self.sputter == "exit":
            normals = [state.outward_normal(index) for index in hit]
            sputters = [normal is None or float(normal @ beam) > 1e-6 for normal in normals]
        else:
            sputters = [self.sputter == "always"] * len(hit)
        events = []
        for index, sputter in zip(hit, sputters):
            if sputter:
                events.append(state.sputter(index, step, projection, self.name))
                continue
            site = state.free_site(index, rng)
            if site is not None:
                events.append(state.hop(index, site, step, projection, self.name))
        return events


@dataclass(frozen=True)
class SurfaceDiffusion:
    """Beam-induced hopping of under-coordinated surface atoms (phenomenological).

    A surface atom (CN < ``cn_bulk``) hops to a free neighbouring site during a projection of dose
    D (e/Å²) with probability ``1 − exp(−rate · exp(−gamma · CN) · D)``: the fewer bonds, the more
    mobile (adatoms, then vertices, edges, facets). Not derived from a cross-section; the defaults
    give a vertex atom of an fcc particle (CN = 6) a hop probability of about 0.2 over a total of
    5e4 e/Å², i.e. noticeable but mild rounding of a particle over a typical low-dose series.

    Parameters
    ----------
    rate
        Hop rate of a hypothetical CN = 0 atom, per e/Å² (default 1e-4; 0 switches it off).
    gamma
        Decay of the rate per neighbour (dimensionless, default 0.5).
    cn_bulk
        Bulk coordination number; atoms at or above it never hop.
    """

    rate: float = param(1e-4, "per e/Å²", minimum=None)
    gamma: float = param(0.5, minimum=None)
    cn_bulk: int = param(12, minimum=None)

    name: ClassVar[str] = "surface_diffusion"

    def __post_init__(self) -> None:
        _check_positive("rate", self.rate)
        _check_positive("gamma", self.gamma)
        if isinstance(self.cn_bulk, bool) or int(self.cn_bulk) != self.cn_bulk or self.cn_bulk < 1:
            raise ValueError(
                f"cn_bulk={self.cn_bulk!r}: expected a positive integer coordination number"
            )

    def active(self, numbers: np.ndarray) -> bool:
        return self.rate > 0

    def step(
        self,
        state: _State,
        step: int,
        projection: int,
        dose: float,
        beam: np.ndarray,
        rng: np.random.Generator,
    ) -> list[DamageEvent]:
        if dose <= 0 or self.rate == 0:
            return []
        cn = state.coordination()
        candidates = np.flatnonzero(state.present & (cn < self.cn_bulk))
        if len(candidates) == 0:
            return []
        probability = -np.expm1(-self.rate * np.exp(-self.gamma * cn[candidates]) * dose)
        hit = candidates[rng.random(len(candidates)) < probability]
        events = []
        for index in hit:
            site = state.free_site(index, rng)
            if site is not None:
                events.append(state.hop(index, site, step, projection, self.name))
        return events


DAMAGE_MODELS: dict[str, type] = {KnockOn.name: KnockOn, SurfaceDiffusion.name: SurfaceDiffusion}


def _model_spec(model) -> str:
    """Canonical ``name:k=v,...`` text of a model (all parameters)."""
    parts = []
    for f in fields(model):
        value = getattr(model, f.name)
        if f.name == "thresholds":
            parts.extend(f"threshold_{symbol}={value[symbol]:g}" for symbol in sorted(value))
        elif isinstance(value, str):
            parts.append(f"{f.name}={value}")
        else:
            parts.append(f"{f.name}={value:g}")
    return f"{model.name}:{','.join(parts)}"


#: The damage models in the spec registry (:mod:`simgen.registry`).
DAMAGE_REGISTRY = registry(
    "damage", "damage models (datasets.yaml damage_models: lists of NAME[:k=v,...])"
)
for _cls in DAMAGE_MODELS.values():
    DAMAGE_REGISTRY.register(_cls.name, _cls)


def describe_models() -> dict[str, dict[str, dict]]:
    """``{name: {param: {"default", "unit", "doc"}}}`` of the damage models, for help texts."""
    return {
        name: {p.key: {"default": p.default, "unit": p.unit, "doc": p.doc} for p in entry.params}
        for name, entry in DAMAGE_REGISTRY.models.items()
    }


def parse_damage(text: str, **defaults) -> KnockOn | SurfaceDiffusion:
    """Build a damage model from ``"name"`` or ``"name:key=value,key=value"``.

    ``defaults`` fill parameters the text does not set, if the model has them (e.g. ``energy``
    from the microscope); unknown defaults are ignored. Examples: ``"knock_on:energy=300e3"``,
    ``"knock_on:threshold_scale=0.8,threshold_Pt=30,sputter=never"``,
    ``"surface_diffusion:rate=2e-4,gamma=0.4"``.
    """
    return DAMAGE_REGISTRY.parse(text, **defaults)
