"""The results record: one JSON object per (sample, ground truth) written by ``aet-bench run``.

Results files are JSON lines (``RESULTS.jsonl``); every line is one record. Leaderboards, sweeps
and ``aet-bench report`` read them, and so can anyone's own tools: the fields below are a
contract. :data:`SCHEMA_VERSION` counts incompatible changes; fields may be added within a
version (readers must ignore fields they do not know). Records written before versioning carry no
``schema_version`` and are read as version 1.

:data:`FIELDS` documents every field (type, unit, meaning); :func:`validate_record` checks one
record and raises a one-line ``ValueError`` naming the first bad field.
"""

from __future__ import annotations

import math

__all__ = ["SCHEMA_VERSION", "FIELDS", "REQUIRED", "METRIC_FIELDS", "validate_record"]

#: Version of the record layout written by this package.
SCHEMA_VERSION = 1

_NUMBER = "number"
_NUMBER_OR_NULL = "number or null"

#: name -> (type, meaning). Metrics are null where undefined (e.g. precision of an empty model).
FIELDS: dict[str, tuple[str, str]] = {
    "schema_version": ("integer", "version of this layout (absent in records before versioning: 1)"),
    "dataset": ("string", "dataset name recorded in the store"),
    "dataset_sha256": (
        "string",
        "sha256 of the store's per-sample checksums (``simgen verify``); empty for a store "
        "that was not complete when scored",
    ),
    "index": ("integer", "sample index in the store"),
    "dose": (_NUMBER_OR_NULL, "dose per projection, e/Å²"),
    "total_dose": (_NUMBER_OR_NULL, "dose of the whole tilt series, e/Å²"),
    "morphology": ("string", "particle shape"),
    "composition": ("string", "composition label"),
    "noise_model": ("string", "name of the noise model"),
    "split": ("string", "train, val or test"),
    "truth": ("string", "ground truth scored against: initial, final or mean"),
    "tilt_scheme": ("string", "acquisition order of the tilts (sequential for stores without one)"),
    "damage_model": ("string", "beam-damage model (none for stores without one)"),
    "method": ("string", "method name (the leaderboard's row)"),
    "method_version": ("string", "method version"),
    "method_options": ("object", "options given to the method beyond weights/model files"),
    "align": ("boolean", "centre + mean-shift alignment before matching"),
    "seconds": (_NUMBER_OR_NULL, "wall-clock seconds of the method's predict"),
    "radius": (_NUMBER, "matching radius, Å"),
    "n_true": ("integer", "true atoms"),
    "n_pred": ("integer", "predicted atoms"),
    "n_matched": ("integer", "one-to-one matched pairs within the radius"),
    "coordinate_error_pm": (_NUMBER_OR_NULL, "RMSD of matched pairs, pm"),
    "recovery_rate": (_NUMBER_OR_NULL, "matched true atoms / true atoms, %"),
    "recovery_rate_species": (_NUMBER_OR_NULL, "matched with the right element / true atoms, %"),
    "precision": (_NUMBER_OR_NULL, "matched predicted atoms / predicted atoms, %"),
    "species_accuracy": (_NUMBER_OR_NULL, "right element among matched atoms, %"),
    "crlb_pm": (_NUMBER_OR_NULL, "isolated-atom Cramér–Rao bound of the true atoms, RMS, pm"),
    "matches": ("array", "per matched pair: true index, element, displacement (paired tables)"),
}

#: Fields every record must have.
REQUIRED = ("method", "dose")

#: Numeric metrics (number or null) checked by :func:`validate_record`.
METRIC_FIELDS = (
    "coordinate_error_pm",
    "recovery_rate",
    "recovery_rate_species",
    "precision",
    "species_accuracy",
    "crlb_pm",
    "seconds",
    "total_dose",
)

_EXPECTED = "expected a JSON object of `aet-bench run` with method, dose and metrics"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def validate_record(record, where: str = "record") -> dict:
    """Check one results record; return it unchanged.

    Parameters
    ----------
    record
        A parsed JSON line.
    where
        Prefix of the error message (e.g. ``"results='r.jsonl' line 3"``).

    Raises
    ------
    ValueError
        One line naming the first problem: not an object, a missing required field, a schema
        version newer than this package reads, a method that is not a string, a metric that is
        neither a number nor null, or a non-finite number.
    """
    if not isinstance(record, dict):
        raise ValueError(f"{where}: {type(record).__name__}, {_EXPECTED}")
    version = record.get("schema_version", 1)
    if not (isinstance(version, int) and not isinstance(version, bool) and version >= 1):
        raise ValueError(f"{where}: schema_version={version!r}; expected a positive integer")
    if version > SCHEMA_VERSION:
        raise ValueError(
            f"{where}: schema_version={version}; this aet-suite reads versions up to "
            f"{SCHEMA_VERSION} (upgrade aet-suite)"
        )
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise ValueError(f"{where}: no {', '.join(missing)}; {_EXPECTED}")
    if not isinstance(record["method"], str) or not record["method"]:
        raise ValueError(f"{where}: method={record['method']!r}; {_EXPECTED}")
    for key in ("dose", *METRIC_FIELDS):
        value = record.get(key)
        if value is None:
            continue
        if not _is_number(value):
            raise ValueError(f"{where}: {key}={value!r} is not a number; {_EXPECTED}")
        if not math.isfinite(value):
            raise ValueError(f"{where}: {key}={value!r} is not finite; expected a number or null")
    if "index" in record and not (
        isinstance(record["index"], int) and not isinstance(record["index"], bool)
    ):
        raise ValueError(f"{where}: index={record['index']!r}; expected an integer sample index")
    return record
