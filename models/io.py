"""Prediction files: the atoms a method predicts, written as extended XYZ.

Shared by the ``pann`` command and the benchmark runner (which writes every method's predictions),
so neither imports the other's command line.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["write_prediction", "species_arrays"]


def species_arrays(extra) -> dict:
    """Per-atom columns of the species step from a prediction's ``extra`` (empty without one).

    ``element_posterior``: the posterior probability of each atom's assigned element;
    ``posterior_<El>``: the posterior of each element present (columns sum to 1 per atom);
    ``detection_probability``: the posterior that the atom is there (``X+refine`` with
    ``detect=true``, :mod:`models.atom_selection`).
    """
    import numpy as np

    extra = extra or {}
    arrays = {}
    if extra.get("detection_probability") is not None:  # models.atom_selection
        arrays["detection_probability"] = np.asarray(extra["detection_probability"], dtype=float)
    posteriors, classes = extra.get("species_posteriors"), extra.get("species_classes")
    if posteriors is None or classes is None:
        return arrays
    posteriors = np.asarray(posteriors, dtype=float).reshape(-1, len(classes))
    arrays["element_posterior"] = posteriors.max(axis=1) if len(posteriors) else np.zeros(0)
    arrays.update({f"posterior_{e}": posteriors[:, j] for j, e in enumerate(classes)})
    return arrays


def write_prediction(
    path: Path,
    positions,
    elements,
    probabilities=None,
    classes=None,
    info=None,
    arrays=None,
    record=False,
) -> None:
    """Extended XYZ: positions (Å) and elements, with per-atom class probabilities as
    ``prob_<class>`` and any further per-atom ``arrays`` (``{name: (N,) values}``, e.g. the
    species step's ``element_posterior`` and ``posterior_<El>``, :func:`species_arrays`).

    ``record``: note the file as this project's output (:func:`simgen.tools.outputs.record_file`), for a
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
    for name, values in (arrays or {}).items():
        if len(atoms):
            atoms.new_array(name, np.asarray(values, dtype=float).reshape(len(atoms)))
    atoms.info.update(info or {})
    from simgen.tools.outputs import atomic_path

    with atomic_path(path, record=record) as tmp:
        ase.io.write(tmp, atoms, format="extxyz")
