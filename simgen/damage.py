"""Electron-beam damage of the particle during a tilt series.

The structure changes while the tilt series is recorded: every projection adds its dose
(:class:`simgen.acquisition.Acquisition`), and the dose displaces atoms. A damage model is a small
named, parameterised object, composable in a :class:`DamageChain` and driven by an explicit
``numpy.random.Generator`` like the noise models. :meth:`DamageChain.evolve` walks the projections
in acquisition order and returns a :class:`DamageHistory`: the list of events (hops and sputtered
atoms) from which the structure seen by every projection is rebuilt exactly.

Models
------
``knock_on``
    Elastic displacement by the beam electrons (knock-on), with the McKinley–Feshbach
    approximation of the Mott cross-section and per-site displacement thresholds lowered at the
    surface by coordination. Heavy atoms cannot be displaced at common voltages: for Pt at 200 kV
    the largest energy an electron can transfer is 2.69 eV, far below any threshold, so the model
    is inert there — this is physics, not a bug.
``surface_diffusion``
    Phenomenological beam-induced surface diffusion: under-coordinated surface atoms hop to a free
    neighbouring site with a probability per unit dose ``rate·exp(−gamma·CN)``. This is the
    mechanism that reshapes heavy-metal particles at doses where knock-on is impossible.

Conventions
-----------
* The structure *during* the projection acquired at step ``s`` is the input changed by all events
  caused by the doses of steps ``0 … s−1``; the events caused by a projection's own dose show from
  the next acquired projection on.
* Surface atoms are those with a coordination number ``CN < cn_bulk`` (12 for fcc), counted within
  ``cutoff`` (default 1.2 × the median nearest-neighbour distance, between the first and second
  fcc shells at 1 and √2 bond lengths).
* A hop moves an atom to a free neighbouring site: a point one bond length from its old position,
  snapped to a bond length from its new neighbours, no closer than 0.85 bond lengths to any other
  atom and bonded to at least 3 atoms (so a hop never leaves an atom floating in vacuum). If no
  such site is found among 64 random directions the atom stays and no event is recorded.
* Randomness: ``evolve`` draws from the generator it is given, and draws **nothing** when every
  model is inactive (all rates zero, no dose, or a cross-section that is zero everywhere — such
  as knock-on of Pt at 200 kV). To keep the imaging and noise draws of a sample unchanged whether
  or not damage is on, pass a child generator, ``rng.spawn(1)[0]``, which does not advance
  ``rng`` itself.

References
----------
W. A. McKinley and H. Feshbach, *Phys. Rev.* 74, 1759 (1948); F. Seitz and J. S. Koehler,
*Solid State Phys.* 2, 305 (1956); F. Banhart, *Rep. Prog. Phys.* 62, 1181 (1999), Eq. 5;
R. F. Egerton, P. Li and M. Malac, *Micron* 35, 399 (2004); R. F. Egerton, *EELS in the Electron
Microscope*, 3rd ed., Springer (2011), §5.7.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, fields, replace
from typing import ClassVar

import numpy as np

from simgen.acquisition import Acquisition
from simgen.specs import param, registry

__all__ = [
    "DISPLACEMENT_THRESHOLDS",
    "DAMAGE_MODELS",
    "describe_models",
    "max_transferred_energy",
    "threshold_beam_energy",
    "mckinley_feshbach_cross_section",
    "coordination_numbers",
    "KnockOn",
    "SurfaceDiffusion",
    "parse_damage",
    "DamageEvent",
    "DamageChain",
    "DamageHistory",
    "image_history",
]

logger = logging.getLogger(__name__)

# CODATA 2018
ELECTRON_REST_ENERGY = 510998.95  # m c², eV
ATOMIC_MASS_ENERGY = 931494102.42  # u c², eV
BOHR_RADIUS = 0.529177210903  # a0, Å
RYDBERG_ENERGY = 13.605693122994  # E_R, eV
FINE_STRUCTURE = 1.0 / 137.035999084
BARN = 1e-8  # Å² per barn (1 b = 1e-28 m²)

#: Bulk displacement threshold energies E_d in eV (minimum thresholds, about ±2 eV). Metals:
#: P. Ehrhart, Landolt–Börnstein New Series III/25 (1991), "Properties and interactions of
#: atomic defects in metals and alloys" (resistivity damage-rate thresholds), as also quoted by
#: Egerton et al., Micron 35, 399 (2004) (Cu ≈ 19–20, Au ≈ 34). Si: J. W. Corbett and
#: J. C. Bourgoin, in Point Defects in Solids vol. 2 (1975), ≈ 13 eV. C (graphitic): Banhart
#: (1999) and J. C. Meyer et al., Phys. Rev. Lett. 108, 196102 (2012) (≈ 21 eV in graphene).
#: Override per element with ``knock_on:threshold_Pt=30``.
DISPLACEMENT_THRESHOLDS: dict[str, float] = {
    "C": 21.0,
    "Al": 16.0,
    "Si": 13.0,
    "Fe": 17.0,
    "Co": 22.0,
    "Ni": 23.0,
    "Cu": 19.0,
    "Pd": 34.0,
    "Ag": 25.0,
    "Pt": 33.0,
    "Au": 35.0,
}

MIN_DISTANCE_FRACTION = 0.85  # of the bond length: closest approach of a hopped atom to any other
MIN_SUPPORT = 3  # neighbours a hopped atom must bond to
SITE_TRIALS = 64  # random directions tried when looking for a free neighbouring site


# ----------------------------------------------------------------------------------------------
# Knock-on physics
# ----------------------------------------------------------------------------------------------


def max_transferred_energy(energy, mass):
    """Largest kinetic energy (eV) a beam electron can give to a nucleus at rest.

    E_max = 2E(E + 2mc²)/(Mc²), head-on elastic collision, relativistic electron.

    Parameters
    ----------
    energy
        Beam kinetic energy E in eV (e.g. 200e3).
    mass
        Nucleus mass M in atomic mass units (u).
    """
    energy = np.asarray(energy, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    return 2.0 * energy * (energy + 2.0 * ELECTRON_REST_ENERGY) / (mass * ATOMIC_MASS_ENERGY)


def threshold_beam_energy(threshold, mass):
    """Beam kinetic energy (eV) at which E_max equals the displacement threshold ``threshold`` (eV).

    The inverse of :func:`max_transferred_energy` (Egerton 2011 writes it as
    E_th = mc² [√(1 + A E_d / (561 eV)) − 1] for A in u, 561 eV ≈ 2 (mc²)²/(u c²)).
    """
    threshold = np.asarray(threshold, dtype=np.float64)
    mass = np.asarray(mass, dtype=np.float64)
    mc2 = ELECTRON_REST_ENERGY
    return mc2 * (np.sqrt(1.0 + threshold * mass * ATOMIC_MASS_ENERGY / (2.0 * mc2**2)) - 1.0)


def mckinley_feshbach_cross_section(energy, threshold, number, mass=None):
    """Displacement cross-section (barn) of a nucleus for a beam electron, McKinley–Feshbach.

    The McKinley–Feshbach (1948) approximation of the Mott cross-section, integrated over energy
    transfers from E_d to E_max (Seitz & Koehler 1956; Banhart 1999, Eq. 5; Egerton 2011)::

        σ_d = 4π a0² Z² E_R² / (mc²)² · (1 − β²)/β⁴
              · [ x − 1 − β² ln x + π α β (2(√x − 1) − ln x) ],   x = E_max / E_d

    with α = Z e²/(ħc) = Z/137, a0 the Bohr radius, E_R the Rydberg energy and β = v/c of the
    electron. The prefactor 4π a0² E_R²/(mc²)² = π r_e² = 0.2495 barn. The bracket without its
    α term is the Rutherford value; σ_d = 0 when E_max ≤ E_d. The approximation is good for
    Z ≲ 28 and underestimates the full Mott value for heavy elements (by up to ~2× for Au at MeV
    energies, Oen 1973); near threshold, where it matters in a TEM, it is within tens of percent.

    Parameters
    ----------
    energy
        Beam kinetic energy in eV.
    threshold
        Displacement threshold energy E_d in eV (> 0).
    number
        Atomic number Z.
    mass
        Nucleus mass in u; the standard atomic weight of ``number`` when omitted.

    Returns
    -------
    numpy.ndarray or float
        σ_d in barn (1 barn = 1e-8 Å²), broadcast over the inputs.
    """
    from ase.data import atomic_masses

    energy = np.asarray(energy, dtype=np.float64)
    threshold = np.asarray(threshold, dtype=np.float64)
    number = np.asarray(number)
    if np.any(~np.isfinite(energy)) or np.any(energy <= 0):
        raise ValueError(f"energy={energy!r}: expected a positive beam kinetic energy in eV")
    if np.any(~np.isfinite(threshold)) or np.any(threshold <= 0):
        raise ValueError(
            f"threshold={threshold!r}: expected a positive displacement threshold in eV"
        )
    if np.any(number < 1) or np.any(number >= len(atomic_masses)):
        raise ValueError(f"number={number!r}: expected atomic numbers 1..{len(atomic_masses) - 1}")
    mass = atomic_masses[number] if mass is None else np.asarray(mass, dtype=np.float64)
    z = number.astype(np.float64)

    gamma = 1.0 + energy / ELECTRON_REST_ENERGY
    beta2 = 1.0 - 1.0 / gamma**2
    beta = np.sqrt(beta2)
    x = max_transferred_energy(energy, mass) / threshold
    above = x > 1.0
    x = np.where(above, x, 1.0)  # keep the logarithms finite; masked to 0 below
    log_x = np.log(x)
    bracket = (
        (x - 1.0)
        - beta2 * log_x
        + np.pi * z * FINE_STRUCTURE * beta * (2.0 * (np.sqrt(x) - 1.0) - log_x)
    )
    prefactor = (
        4.0 * np.pi * BOHR_RADIUS**2 * z**2 * RYDBERG_ENERGY**2 / ELECTRON_REST_ENERGY**2
    )  # Å²
    sigma = prefactor * (1.0 - beta2) / beta2**2 * bracket / BARN
    sigma = np.where(above, sigma, 0.0)
    return sigma if sigma.ndim else float(sigma)


# ----------------------------------------------------------------------------------------------
# Structure bookkeeping
# ----------------------------------------------------------------------------------------------


def coordination_numbers(positions: np.ndarray, cutoff: float) -> np.ndarray:
    """Number of other atoms within ``cutoff`` (Å) of each of the ``(N, 3)`` positions (Å)."""
    from scipy.spatial import cKDTree

    positions = np.asarray(positions, dtype=np.float64)
    if len(positions) == 0:
        return np.zeros(0, dtype=np.int64)
    tree = cKDTree(positions)
    return (
        np.asarray(tree.query_ball_point(positions, cutoff, return_length=True), dtype=np.int64) - 1
    )


def _bond_length(positions: np.ndarray) -> float:
    """Median nearest-neighbour distance (Å) of a structure."""
    from scipy.spatial import cKDTree

    distances, _ = cKDTree(positions).query(positions, k=2)
    return float(np.median(distances[:, 1]))


@dataclass(frozen=True)
class DamageEvent:
    """One change of the structure.

    Attributes
    ----------
    step
        Acquisition step whose dose caused the event; it shows from step ``step + 1`` on.
    projection
        Stored index of that projection (``acquisition.order[step]``).
    id
        Stable id of the atom (``atoms.arrays["ids"]``, or its index in the input).
    kind
        ``"hop"`` or ``"sputter"`` (removed from the particle).
    old, new
        Position (x, y, z) in Å before and after; ``new`` is NaN for a sputtered atom.
    model
        Name of the damage model that caused it.
    """

    step: int
    projection: int
    id: int
    kind: str
    old: tuple[float, float, float]
    new: tuple[float, float, float]
    model: str


class _State:
    """The evolving particle: positions, presence and cached coordination numbers."""

    def __init__(
        self,
        positions: np.ndarray,
        numbers: np.ndarray,
        ids: np.ndarray,
        bond: float,
        cutoff: float,
    ):
        self.positions = np.array(positions, dtype=np.float64)
        self.numbers = numbers
        self.ids = ids
        self.present = np.ones(len(positions), dtype=bool)
        self.bond = bond
        self.cutoff = cutoff
        self._coordination: np.ndarray | None = None
        self.container: tuple[np.ndarray, float] | None = None  # (centre Å, radius Å)

    def coordination(self) -> np.ndarray:
        """CN of every atom (−1 for removed atoms), recomputed only after a change."""
        if self._coordination is None:
            cn = np.full(len(self.positions), -1, dtype=np.int64)
            cn[self.present] = coordination_numbers(self.positions[self.present], self.cutoff)
            self._coordination = cn
        return self._coordination

    def outward_normal(self, index: int) -> np.ndarray | None:
        """Unit vector from the centroid of the atom's neighbours to the atom (None if isolated)."""
        others = self._others(index)
        near = others[np.linalg.norm(others - self.positions[index], axis=1) <= self.cutoff]
        if len(near) == 0:
            return None
        vector = self.positions[index] - near.mean(axis=0)
        norm = np.linalg.norm(vector)
        return vector / norm if norm > 0 else None

    def _others(self, index: int) -> np.ndarray:
        mask = self.present.copy()
        mask[index] = False
        return self.positions[mask]

    def free_site(self, index: int, rng: np.random.Generator) -> np.ndarray | None:
        """A free site one bond length from atom ``index``, bonded to ≥ MIN_SUPPORT atoms, or None."""
        origin = self.positions[index]
        others = self._others(index)
        # only atoms that can touch a site one bond length away matter
        others = others[np.linalg.norm(others - origin, axis=1) <= self.bond + self.cutoff]
        if len(others) < MIN_SUPPORT:
            return None
        directions = rng.normal(size=(SITE_TRIALS, 3))
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        sites = origin + self.bond * directions
        # Snap towards hollows: fixed-point steps setting the distances to the nearby atoms to one
        # bond length (an fcc-like adsorption site).
        for _ in range(12):
            delta = sites[:, None, :] - others[None, :, :]
            distance = np.linalg.norm(delta, axis=-1)
            near = distance <= self.cutoff
            count = near.sum(axis=1)
            stretch = np.where(near, (self.bond - distance) / np.maximum(distance, 1e-9), 0.0)
            push = (stretch[..., None] * delta).sum(axis=1) / np.maximum(count, 1)[:, None]
            sites = sites + 0.5 * push
        distance = np.linalg.norm(sites[:, None, :] - others[None, :, :], axis=-1)
        valid = (
            (distance.min(axis=1) >= MIN_DISTANCE_FRACTION * self.bond)
            & (np.count_nonzero(distance <= self.cutoff, axis=1) >= MIN_SUPPORT)
            & (np.linalg.norm(sites - origin, axis=1) > 0.25 * self.bond)  # a move, not a return
        )
        if self.container is not None:
            centre, radius = self.container
            valid &= np.linalg.norm(sites - centre, axis=1) <= radius
        if not np.any(valid):
            return None
        return sites[np.argmax(valid)]  # the first valid one of the random directions

    def hop(
        self, index: int, site: np.ndarray, step: int, projection: int, model: str
    ) -> DamageEvent:
        old = tuple(float(v) for v in self.positions[index])
        self.positions[index] = site
        self._coordination = None
        return DamageEvent(
            step, projection, int(self.ids[index]), "hop", old, tuple(float(v) for v in site), model
        )

    def sputter(self, index: int, step: int, projection: int, model: str) -> DamageEvent:
        old = tuple(float(v) for v in self.positions[index])
        self.present[index] = False
        self._coordination = None
        return DamageEvent(
            step, projection, int(self.ids[index]), "sputter", old, (np.nan,) * 3, model
        )


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


#: The damage models in the spec registry (:mod:`simgen.specs`).
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


# ----------------------------------------------------------------------------------------------
# History and chain
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DamageHistory:
    """The input structure, the acquisition and the damage events, in acquisition order.

    Every structure is rebuilt exactly from these: positions are the input's float64 values,
    changed only by the recorded events. Returned ``Atoms`` carry ``arrays["ids"]``.
    """

    atoms: object  # ase.Atoms, the input structure with an "ids" array
    acquisition: Acquisition
    events: tuple[DamageEvent, ...] = ()
    models: tuple[str, ...] = ()

    @property
    def ids(self) -> np.ndarray:
        return self.atoms.arrays["ids"]

    def _index(self) -> dict[int, int]:
        return {int(atom_id): i for i, atom_id in enumerate(self.ids)}

    def _states(self):
        """Yield (step, positions, present) for steps 0..A (A = after the last projection)."""
        index = self._index()
        positions = self.atoms.positions.copy()
        present = np.ones(len(self.atoms), dtype=bool)
        events = sorted(self.events, key=lambda e: e.step)  # stable: keeps the order within a step
        cursor = 0
        for step in range(self.acquisition.n_projections + 1):
            while cursor < len(events) and events[cursor].step < step:
                event = events[cursor]
                i = index[event.id]
                if event.kind == "hop":
                    positions[i] = event.new
                else:
                    present[i] = False
                cursor += 1
            yield step, positions, present

    def _atoms_from(self, positions: np.ndarray, present: np.ndarray):
        out = self.atoms[present]
        out.positions = positions[present]
        return out

    def structure_at_step(self, step: int):
        """Structure during the projection acquired at ``step`` (``step = A``: after the series)."""
        n = self.acquisition.n_projections
        if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 0 <= step <= n:
            raise ValueError(f"step={step!r}: expected an integer in 0..{n}")
        for s, positions, present in self._states():
            if s == step:
                return self._atoms_from(positions, present)
        raise AssertionError("unreachable")

    def structure_at(self, index: int):
        """Structure seen by the projection stored at ``index`` (tilt order)."""
        n = self.acquisition.n_projections
        if (
            isinstance(index, bool)
            or not isinstance(index, (int, np.integer))
            or not 0 <= index < n
        ):
            raise ValueError(f"index={index!r}: expected a projection index in 0..{n - 1}")
        return self.structure_at_step(int(self.acquisition.step[index]))

    def initial(self):
        """The input structure (with ids)."""
        return self.atoms.copy()

    def final(self):
        """The structure after the whole series (all events applied)."""
        return self.structure_at_step(self.acquisition.n_projections)

    def dose_weighted_mean(self, min_presence: float = 0.5):
        """The structure a reconstruction of the whole series sees, on average.

        Each atom's position is averaged over the projections in which it is present, weighted by
        their doses. Its ``presence`` (``arrays["presence"]``) is the fraction of the total dose
        it was present for; atoms sputtered before receiving ``min_presence`` of the dose (default
        half) are left out, since they show at less than half intensity in the reconstruction.
        """
        n = len(self.atoms)
        initial = self.atoms.positions
        dose = self.acquisition.dose[self.acquisition.order]
        total = dose.sum()
        # averaged as displacements from the input, so atoms that never move keep exact positions
        weighted = np.zeros((n, 3))
        weights = np.zeros(n)
        for step, positions, present in self._states():
            if step == len(dose):
                break
            weighted[present] += dose[step] * (positions[present] - initial[present])
            weights[present] += dose[step]
        presence = weights / total if total > 0 else np.ones(n)
        keep = presence >= min_presence
        out = self.atoms[keep]
        if total > 0:
            out.positions = initial[keep] + weighted[keep] / weights[keep, None]
        out.arrays["presence"] = presence[keep]
        return out

    def moved_atoms(self) -> np.ndarray:
        """Sorted ids of the atoms with at least one event (hopped or sputtered)."""
        return np.unique(np.asarray([e.id for e in self.events], dtype=np.int64))

    def sputtered_atoms(self) -> np.ndarray:
        """Sorted ids of the atoms removed during the series."""
        return np.unique(
            np.asarray([e.id for e in self.events if e.kind == "sputter"], dtype=np.int64)
        )

    def runs(self) -> list[tuple[int, np.ndarray]]:
        """Consecutive acquisition steps that see the same structure.

        Returns ``[(first_step, stored_indices), ...]`` in acquisition order; image each run once
        with ``structure_at_step(first_step)``. Without events there is one run.
        """
        changed = {e.step + 1 for e in self.events}
        n = self.acquisition.n_projections
        starts = [0] + [s for s in sorted(changed) if 0 < s < n]
        bounds = starts + [n]
        return [(a, self.acquisition.order[a:b].copy()) for a, b in zip(bounds[:-1], bounds[1:])]

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Events as arrays for a store: step, projection, id, kind (0 hop, 1 sputter), old, new (Å)."""
        events = self.events
        return {
            "step": np.asarray([e.step for e in events], dtype=np.int32),
            "projection": np.asarray([e.projection for e in events], dtype=np.int32),
            "id": np.asarray([e.id for e in events], dtype=np.int64),
            "kind": np.asarray([0 if e.kind == "hop" else 1 for e in events], dtype=np.uint8),
            "old": np.asarray([e.old for e in events], dtype=np.float64).reshape(-1, 3),
            "new": np.asarray([e.new for e in events], dtype=np.float64).reshape(-1, 3),
        }


@dataclass(frozen=True)
class DamageChain:
    """Damage models applied in turn to each projection's dose, in acquisition order."""

    models: tuple = ()

    @classmethod
    def from_specs(
        cls, specs: Iterable[str] | str | None, *, energy: float | None = None
    ) -> DamageChain:
        """Chain from spec strings (``parse_damage``); ``energy`` (eV) sets models' default beam energy."""
        if specs is None:
            return cls(())
        if isinstance(specs, str):
            specs = [specs]
        return cls(tuple(parse_damage(spec, energy=energy) for spec in specs))

    def with_energy(self, energy: float) -> DamageChain:
        """The same chain with the beam energy (eV) of every model that has one replaced."""
        return DamageChain(
            tuple(replace(m, energy=energy) if hasattr(m, "energy") else m for m in self.models)
        )

    def specs(self) -> tuple[str, ...]:
        """Canonical spec strings of the models, for the store's metadata."""
        return tuple(_model_spec(m) for m in self.models)

    def active(self, atoms) -> bool:
        """Whether any model can change these atoms (if not, ``evolve`` draws no random numbers)."""
        numbers = np.asarray(atoms.numbers)
        return any(m.active(numbers) for m in self.models)

    def evolve(
        self,
        atoms,
        acquisition: Acquisition,
        rng: np.random.Generator,
        *,
        bond_length: float | None = None,
        cutoff: float | None = None,
        container: tuple[float | Sequence[float], float] | None = None,
    ) -> DamageHistory:
        """Run the series: apply every model to each projection's dose, in acquisition order.

        Parameters
        ----------
        atoms
            ``ase.Atoms`` (Å); ``arrays["ids"]`` (unique integers) are kept as atom ids, else the
            input indices are used.
        acquisition
            Angles, order and doses of the series.
        rng
            Generator for the damage draws (pass ``rng.spawn(1)[0]`` to leave ``rng`` untouched).
        bond_length
            Nearest-neighbour distance in Å (default: median nearest-neighbour distance).
        cutoff
            Coordination cutoff in Å (default 1.2 × ``bond_length``).
        container
            ``(centre, radius)`` in Å: hops that would leave this sphere are rejected, so atoms stay
            inside the imaged volume at every tilt (e.g. ``(volume_center(size, sampling),
            (size / 2 - 1) * sampling)``). Default: no limit.
        """
        if not isinstance(rng, np.random.Generator):
            raise ValueError(f"rng={rng!r}: expected a numpy.random.Generator")
        atoms = atoms.copy()
        n = len(atoms)
        if "ids" in atoms.arrays:
            ids = np.asarray(atoms.arrays["ids"])
            if not np.issubdtype(ids.dtype, np.integer) or len(np.unique(ids)) != n:
                raise ValueError("atoms.arrays['ids']: expected unique integer atom ids")
            ids = ids.astype(np.int64)
        else:
            ids = np.arange(n, dtype=np.int64)
        atoms.arrays["ids"] = ids
        specs = self.specs()
        if not self.models or n == 0 or not self.active(atoms):
            return DamageHistory(atoms, acquisition, (), specs)

        if bond_length is None:
            bond_length = _bond_length(atoms.positions) if n >= 2 else 2.5
        _check_positive("bond_length", bond_length, allow_zero=False)
        cutoff = 1.2 * bond_length if cutoff is None else cutoff
        _check_positive("cutoff", cutoff, allow_zero=False)

        state = _State(atoms.positions, np.asarray(atoms.numbers), ids, bond_length, cutoff)
        if container is not None:
            centre = np.broadcast_to(np.asarray(container[0], dtype=np.float64), (3,))
            radius = float(container[1])
            if not np.all(np.isfinite(centre)) or not np.isfinite(radius) or radius <= 0:
                raise ValueError(f"container={container!r}: expected (centre Å, positive radius Å)")
            state.container = (centre, radius)
        events: list[DamageEvent] = []
        for step, projection in enumerate(acquisition.order):
            projection = int(projection)
            dose = float(acquisition.dose[projection])
            beam = acquisition.beam_direction(projection)
            for model in self.models:
                events.extend(model.step(state, step, projection, dose, beam, rng))
        n_sputtered = sum(e.kind == "sputter" for e in events)
        logger.info(
            "damage %s: %d hops, %d sputtered atoms over %.3g e/Å²",
            ", ".join(specs),
            len(events) - n_sputtered,
            n_sputtered,
            acquisition.total_dose,
        )
        return DamageHistory(atoms, acquisition, tuple(events), specs)


def image_history(
    history: DamageHistory,
    imager: Callable[..., np.ndarray],
    angles: Sequence[float] | np.ndarray | None = None,
) -> np.ndarray:
    """Tilt series of an evolving structure: each run of identical structures imaged once.

    Parameters
    ----------
    history
        The damage history of the series.
    imager
        ``imager(atoms, angles_deg) -> (n, P, P)`` array, e.g.
        ``functools.partial(simgen.imaging.simulate_tilt_series, size=..., sampling=...)``.
    angles
        Angles (degrees, stored order) handed to the imager, e.g. the true angles when they differ
        from the nominal ones; default ``history.acquisition.angles``.

    Returns
    -------
    numpy.ndarray
        ``(A, P, P)`` in stored (tilt) order.
    """
    angles = history.acquisition.angles if angles is None else np.asarray(angles, dtype=np.float64)
    if angles.shape != history.acquisition.angles.shape:
        raise ValueError(
            f"angles={angles!r}: expected {history.acquisition.n_projections} angles, one per projection"
        )
    out = None
    for first_step, indices in history.runs():
        images = np.asarray(imager(history.structure_at_step(first_step), angles[indices]))
        if out is None:
            out = np.empty((len(angles), *images.shape[1:]), dtype=images.dtype)
        out[indices] = images
    return out
