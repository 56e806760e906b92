"""Electron-beam damage of the particle during a tilt series.

The structure changes while the tilt series is recorded: every projection adds its dose
(:class:`simgen.physics.acquisition.Acquisition`), and the dose displaces atoms. A damage model is a small
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

from simgen.damage.cross_section import (
    DISPLACEMENT_THRESHOLDS,
    max_transferred_energy,
    mckinley_feshbach_cross_section,
    threshold_beam_energy,
)
from simgen.damage.events import DamageEvent, coordination_numbers
from simgen.damage.history import DamageChain, DamageHistory, image_history
from simgen.damage.models import (
    DAMAGE_MODELS,
    DAMAGE_REGISTRY,
    KnockOn,
    SurfaceDiffusion,
    describe_models,
    parse_damage,
)

__all__ = [
    "DISPLACEMENT_THRESHOLDS",
    "DAMAGE_MODELS",
    "DAMAGE_REGISTRY",
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
