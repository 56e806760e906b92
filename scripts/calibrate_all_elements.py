"""Measure σ(Z) with abTEM for every element Z = 1–83 (H–Bi), none interpolated.

The shipped table (``simgen/data/calibration.json``) was made by
``OMP_NUM_THREADS=1 python -m simgen.physics.calibration --out simgen/data/calibration.json``: abTEM
multislice of a single atom in a periodic cell at the configured kV, convergence and detector
(:func:`simgen.physics.calibration.compute_cross_section`), for H–Cr and a set up to Bi, with the gaps
interpolated in log σ vs log Z. This script computes the gaps with the same function and the same
settings, so that every entry of Z = 1–83 is measured:

* the entries the table already holds as ``"source": "abtem"`` are kept (seeded into the resume
  checkpoint of :func:`simgen.physics.calibration.calibrate`, which checks that the microscope and the
  settings are the same); ``--recompute`` computes every element again;
* the others are computed one by one (resumable after an interruption: rerun the same command).

Run (about 20–40 s per element on one core)::

    OMP_NUM_THREADS=1 nice .venv/bin/python scripts/calibrate_all_elements.py \
        --out /work/data/import/calibration.json
    cp /work/data/import/calibration.json simgen/data/calibration.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ase.data import chemical_symbols

from simgen.physics.calibration import (
    CALIBRATION_CELL,
    CALIBRATION_SCAN_STEP,
    _potential_sampling_for,
    calibrate,
)
from simgen.physics.microscope import CALIBRATION_PATH, Microscope
from simgen.tools.outputs import write_text_atomic


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output JSON (the new calibration table)")
    parser.add_argument(
        "--base", default=str(CALIBRATION_PATH), help="table whose measured entries are kept"
    )
    parser.add_argument("--z-max", type=int, default=83, help="last atomic number (default Bi)")
    parser.add_argument("--recompute", action="store_true", help="compute every element again")
    parser.add_argument(
        "--partial-from",
        metavar="CHECKPOINT",
        help="write the table from the elements measured so far in another run's resume "
        "checkpoint (the rest interpolated and labelled so), computing nothing new",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    base = json.loads(Path(args.base).read_text(encoding="utf-8"))
    microscope = Microscope(**base["microscope"])
    settings = {
        "method": "abTEM multislice, single atom in a periodic cell, no phonons",
        "cell": CALIBRATION_CELL,
        "scan_step": CALIBRATION_SCAN_STEP,
        "potential_sampling": _potential_sampling_for(microscope),
        "slice_thickness": 1.0,
        "parametrization": "lobato",
    }
    if base.get("settings") != settings:
        raise SystemExit(
            f"--base={args.base!r}: settings {base.get('settings')} differ from {settings}"
        )
    elements = list(chemical_symbols[1 : args.z_max + 1])
    checkpoint = Path(args.out + ".partial.json")
    if args.partial_from:
        saved = json.loads(Path(args.partial_from).read_text(encoding="utf-8"))
        elements = [e for e in elements if e in saved["cross_sections"]]
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(checkpoint, json.dumps(saved, indent=1))
    if not args.recompute and not checkpoint.is_file():
        measured = {
            s: v["sigma"] for s, v in base["cross_sections"].items() if v.get("source") == "abtem"
        }
        checkpoint.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "microscope": microscope.to_dict(),
            "settings": settings,
            "cross_sections": measured,
        }
        write_text_atomic(checkpoint, json.dumps(state, indent=1))
        logging.info("kept %d measured entries of %s", len(measured), args.base)
    elements_order = list(chemical_symbols)
    result = calibrate(
        elements,
        microscope,
        out=args.out,
        thermal_sigma=float(base["thermal_sigma"]),
        progress=True,
        command="OMP_NUM_THREADS=1 python scripts/calibrate_all_elements.py --out " + args.out,
    )
    measured = sorted(
        (k for k, v in result["cross_sections"].items() if v["source"] == "abtem"),
        key=elements_order.index,
    )
    result["note"] = (
        f"Entries with source 'abtem' ({len(measured)} of Z = 1-{args.z_max}) are measured with "
        "abTEM (simgen.physics.calibration.compute_cross_section, the settings above); entries measured "
        "for the earlier table were kept at their stored values; any other entry is "
        "interpolated in log sigma vs log Z and labelled so."
    )
    write_text_atomic(args.out, json.dumps(result, indent=1))
    sources = {v["source"] for v in result["cross_sections"].values()}
    logging.info(
        "wrote %s: %d entries, sources %s", args.out, len(result["cross_sections"]), sources
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
