"""Prediction files: the atoms a method predicts, written as extended XYZ.

Shared by the ``pann`` command and the benchmark runner (which writes every method's predictions),
so neither imports the other's command line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_prediction"]


def write_prediction(
    path: Path, positions, elements, probabilities=None, classes=None, info=None, record=False
) -> None:
    """Extended XYZ: positions (Å) and elements, with per-atom class probabilities as ``prob_<class>``.

    ``record``: note the file as this project's output (:func:`simgen.outputs.record_file`), for a
    file given as ``--out`` (a later ``--overwrite`` may then replace it, and only it).
    """
    import ase
    import ase.io
    import numpy as np

    atoms = ase.Atoms(
        symbols=[e if e != "unknown" else "X" for e in elements],
        positions=np.asarray(positions).reshape(-1, 3),
    )
    if probabilities is not None and classes is not None and len(atoms):
        for j, name in enumerate(classes):
            atoms.new_array(f"prob_{name}", np.asarray(probabilities)[:, j].astype(float))
    atoms.info.update(info or {})
    from simgen.outputs import atomic_path

    with atomic_path(path, record=record) as tmp:
        ase.io.write(tmp, atoms, format="extxyz")
