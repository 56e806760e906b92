"""The ``files`` method: predictions made anywhere, read from one model file per sample.

A method developer with their own code writes one atomic model per sample of a store and scores
the folder exactly as the built-in methods are scored::

    aet-bench run --method files --predictions DIR --data STORE --out RESULTS.jsonl

**Naming rule.** A file belongs to sample ``i`` when the part of its name before the first dot
ends in the digits of ``i`` (leading zeros allowed): ``3.xyz``, ``0003.xyz``, ``sample_0003.xyz``
and ``pred-3.extxyz`` all hold sample 3. Hidden files and names without trailing digits
(``README.md``) are ignored; two files for one sample are an error. Any format ``ase.io.read``
reads (``.xyz``, extended XYZ, ``.cif``, ``.pdb``, ...) and the formats of
:func:`simgen.structures.load_model` (``.txt`` rows ``species x y z``, ``.npy``, ``.mat``) work.

**Frame.** Positions in Å in the store's volume frame (voxel ``k`` centred at ``k * sampling``),
the frame ``aet-bench run --models`` writes for simulated stores. Element ``X`` means "unknown".

**Confidence.** An optional per-atom column: a column named by the ``confidence`` option
(default ``"confidence"``) in an extended XYZ file, or class probabilities ``prob_<class>`` as
``aet-bench run --models`` and ``pann predict`` write them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from benchmark.methods import register
from benchmark.methods.base import Method, Prediction

__all__ = ["FilesMethod", "prediction_files"]

logger = logging.getLogger(__name__)

_INDEX = re.compile(r"(\d+)$")
MISSING = ("error", "empty")


def prediction_files(folder) -> dict[int, Path]:
    """Sample index -> model file of ``folder``, by the naming rule of this module.

    Raises
    ------
    ValueError
        ``folder`` is not a directory, or two files name the same sample.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(
            f"predictions={str(folder)!r}: not a directory; expected a folder of model files, "
            "one per sample (e.g. 0.xyz, 1.xyz, ...)"
        )
    files: dict[int, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        match = _INDEX.search(path.name.split(".", 1)[0])
        if match is None:
            logger.info("predictions: %s has no sample index in its name; ignored", path.name)
            continue
        index = int(match.group(1))
        if index in files:
            raise ValueError(
                f"predictions={str(folder)!r}: {files[index].name} and {path.name} both name "
                f"sample {index}; expected one file per sample"
            )
        files[index] = path
    return files


def _read_model(path: Path):
    """``ase.Atoms`` of one prediction file (an empty model allowed; ``X`` for unknown)."""
    import ase.io

    try:
        return ase.io.read(str(path))
    except Exception:  # formats of our own loader (.txt species rows, .npy, .mat, quirky XYZ)
        from simgen.structures import load_model

        return load_model(path, allow_empty=True)


@register("files")
class FilesMethod(Method):
    """Predicted models read from files, one per sample (see the module docstring).

    Parameters
    ----------
    predictions
        Folder of model files named by sample index (``0.xyz``, ``sample_0003.xyz``, ...).
    missing
        ``"error"`` (default): a sample without a file stops the run before any scoring, naming
        the samples; ``"empty"``: such a sample is scored as an empty model (recovery 0).
    label
        Method name in the results records and on the leaderboard (default ``"files"``).
    confidence
        Name of a per-atom confidence column in extended XYZ files (default ``"confidence"``;
        used when present).
    """

    version = "1"

    def __init__(self, predictions=None, missing="error", label=None, confidence="confidence"):
        if predictions is None:
            raise ValueError(
                "predictions=None: the files method needs a folder of model files "
                "(aet-bench run --method files --predictions DIR)"
            )
        if missing not in MISSING:
            raise ValueError(f"missing={missing!r}: expected one of {', '.join(MISSING)}")
        if label is not None and (not isinstance(label, str) or not label.strip()):
            raise ValueError(f"label={label!r}: expected a non-empty method name")
        options = {"predictions": str(predictions), "missing": missing}
        super().__init__(**options)
        self.files = prediction_files(predictions)
        self.missing = missing
        self.confidence_column = str(confidence)
        if label is not None:
            self.name = label.strip()

    def check_samples(self, indices) -> None:
        """Raise before any scoring when a sample of ``indices`` has no file (``missing="error"``)."""
        absent = [int(i) for i in indices if int(i) not in self.files]
        if absent and self.missing == "error":
            shown = ", ".join(map(str, absent[:10])) + (" ..." if len(absent) > 10 else "")
            raise ValueError(
                f"predictions={self.options['predictions']!r}: no file for sample(s) {shown} "
                f"({len(absent)} of {len(indices)}; expected e.g. {absent[0]}.xyz); "
                "--option missing=empty scores a missing sample as an empty model"
            )

    def predict(self, sample: dict) -> Prediction:
        index = int(sample["index"])
        path = self.files.get(index)
        if path is None:
            self.check_samples([index])
            return Prediction(np.zeros((0, 3)), [], extra={"file": None})
        atoms = _read_model(path)
        positions = np.asarray(atoms.get_positions(), dtype=np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(positions)):
            bad = int(np.flatnonzero(~np.all(np.isfinite(positions), axis=1))[0])
            raise ValueError(
                f"predictions: {path}: atom {bad + 1} has a NaN or infinite coordinate; "
                "expected positions in Å"
            )
        elements = [s if s != "X" else "unknown" for s in atoms.get_chemical_symbols()]
        confidence, classes = None, None
        arrays = getattr(atoms, "arrays", {})
        if self.confidence_column in arrays:
            confidence = np.asarray(arrays[self.confidence_column], dtype=np.float64).reshape(-1)
        else:
            classes = [k[len("prob_") :] for k in arrays if k.startswith("prob_")]
            if classes:
                confidence = np.stack([arrays[f"prob_{c}"] for c in classes], axis=1)
        extra = {"file": path.name}
        if classes:
            extra["classes"] = classes
        return Prediction(positions, elements, confidence, extra=extra)
