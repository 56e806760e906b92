"""The interface every benchmarked method implements, and what it returns.

A method turns one sample (a dict as returned by ``simgen.open_dataset(path)[i]``, or built by
hand) into a predicted atomic model. Keys a method may use:

``volume`` (V, V, V) float32, reconstruction ``[z, y, x]`` in Å² per voxel;
``tilt_series`` (A, P, P) measured counts; ``angles`` (A,) degrees; ``sampling`` Å;
``elements`` list of element symbols present; ``dose`` e/Å² per projection; plus any metadata.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Prediction", "Method"]


@dataclass
class Prediction:
    """A predicted atomic model.

    Attributes
    ----------
    positions : (N, 3) float64
        ``(x, y, z)`` in Å in the volume frame (voxel ``k`` centred at ``k * sampling``).
    elements : list of str
        Element symbol per atom; ``"unknown"`` where the method does not assign one.
    confidence : (N,) or (N, K) ndarray, optional
        Per-atom confidence, or class probabilities over ``extra["classes"]``.
    extra : dict
        Anything else the method wants to report (thresholds used, timings, ...).
    """

    positions: np.ndarray
    elements: list[str]
    confidence: np.ndarray | None = None
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        positions = np.asarray(self.positions, dtype=np.float64)
        if positions.size == 0:
            positions = np.zeros((0, 3))
        if positions.ndim != 2 or positions.shape[1] != 3:
            raise ValueError(f"positions.shape={positions.shape}: expected (N, 3) in Å")
        self.positions = positions
        self.elements = [str(e) for e in self.elements]
        if len(self.elements) != len(positions):
            raise ValueError(
                f"elements: expected {len(positions)} symbols (one per atom), got {len(self.elements)}"
            )
        if self.confidence is not None:
            confidence = np.asarray(self.confidence, dtype=np.float64)
            if confidence.ndim not in (1, 2) or confidence.shape[0] != len(positions):
                raise ValueError(
                    f"confidence.shape={confidence.shape}: expected ({len(positions)},) or ({len(positions)}, K)"
                )
            self.confidence = confidence

    def __len__(self) -> int:
        return len(self.positions)

    def to_atoms(self):
        """The prediction as ``ase.Atoms`` (unknown elements written as X)."""
        from ase import Atoms

        symbols = [e if e != "unknown" else "X" for e in self.elements]
        return Atoms(symbols=symbols, positions=self.positions)


def flag_option(name: str, value) -> bool:
    """``value`` when it is a bool; else a one-line ValueError naming the option."""
    if not isinstance(value, bool):
        raise ValueError(f"{name}={value!r}: expected true or false")
    return value


class Method:
    """Base class of a benchmarked method.

    Subclasses set ``name`` and ``version``, take their options as keyword arguments in
    ``__init__`` and implement :meth:`predict`. Register them with
    ``@benchmark.methods.register("name")``.
    """

    name: str = "method"
    version: str = "0"

    def __init__(self, **options):
        self.options = dict(options)

    @classmethod
    def accepted_options(cls) -> set[str] | None:
        """Option names ``cls(...)`` takes, or None where it takes any (``**options``)."""
        import inspect

        parameters = inspect.signature(cls.__init__).parameters.values()
        if any(p.kind is p.VAR_KEYWORD for p in parameters):
            return None
        return {p.name for p in parameters if p.name != "self" and p.kind is not p.VAR_POSITIONAL}

    def predict(self, sample: dict) -> Prediction:
        """Predict the atomic model of one sample."""
        raise NotImplementedError(f"{type(self).__name__}.predict")

    def describe(self) -> dict:
        """Name, version and options, for results files."""
        return {"method": self.name, "version": self.version, "options": dict(self.options)}

    def __repr__(self) -> str:
        options = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{type(self).__name__}({options})"
