"""What damage did to a particle: :class:`DamageHistory` (the events, and every structure rebuilt
from them), :class:`DamageChain` (the models applied projection by projection) and
:func:`image_history` (a tilt series whose projections each see their own structure)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from simgen.damage.events import DamageEvent, _bond_length, _State
from simgen.damage.models import _check_positive, _model_spec, parse_damage
from simgen.physics.acquisition import Acquisition
from simgen.registry import Spec

__all__ = ["DamageHistory", "DamageChain", "image_history"]

logger = logging.getLogger(__name__)

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
        """Chain from specs: parsed :class:`simgen.registry.Spec` objects (their models as they are)
        or strings (``parse_damage``; ``energy`` (eV) sets the models' default beam energy)."""
        if specs is None:
            return cls(())
        if isinstance(specs, (str, Spec)):
            specs = [specs]
        return cls(
            tuple(
                spec.model if isinstance(spec, Spec) else parse_damage(spec, energy=energy)
                for spec in specs
            )
        )

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
        ``functools.partial(simgen.physics.imaging.simulate_tilt_series, size=..., sampling=...)``.
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
