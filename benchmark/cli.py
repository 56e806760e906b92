"""``aet-bench``: run methods on stores, score models, build leaderboards and dose sweeps, measure speed."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

__all__ = ["main"]


def _add_method_arguments(p) -> None:
    """The method arguments, the same for ``run`` and ``sweep``."""
    p.add_argument(
        "--weights",
        help="weights for unet3d/pann: run directory, .pt, or a published Lee 2021 file (unet3d)",
    )
    p.add_argument(
        "--model-file", help="torch method: a TorchScript volume-to-volume network (.pt)"
    )
    p.add_argument(
        "--predictions",
        metavar="DIR",
        help="files method: a folder of predicted models, one per sample index "
        "(0.xyz, sample_0003.xyz, ...; any ASE format)",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a method option, repeatable (e.g. --method pann+refine --option reassign=true); "
        'VALUE is read as JSON (true, 3, 0.5, "text") or else as text',
    )


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aet-bench", description=__doc__.replace("``", ""))
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")
    from benchmark import __version__

    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("run", help="run a method on a store; one JSON line per sample")
    p.add_argument(
        "--method",
        required=True,
        help="classical, unet3d, pann, torch, files, X+refine or a plugin's name",
    )
    p.add_argument("--data", required=True, help="simgen Zarr store")
    p.add_argument(
        "--split", default="test", help="split to run on (default test; 'all' for every sample)"
    )
    p.add_argument("--out", required=True, help="RESULTS.jsonl")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace existing results (and --models) written by aet-bench (never other files)",
    )
    p.add_argument("--models", help="directory for the predicted models (<index>.xyz)")
    p.add_argument("--limit", type=int, help="run on at most N samples")
    p.add_argument(
        "--limit-per",
        metavar="FIELD",
        help="with --limit: at most N samples per value of this meta field (e.g. dose: a slice "
        "of a dose sweep that covers every dose)",
    )
    p.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    p.add_argument("--radius", type=float, default=1.0, help="matching radius (Å)")
    p.add_argument(
        "--align", action="store_true", help="centre + mean-shift alignment before matching"
    )
    _add_method_arguments(p)
    p.add_argument(
        "--truth",
        default="initial",
        help="ground truth for damaged samples: initial, final, mean (comma-separated for several)",
    )

    p = sub.add_parser("score", help="score a predicted model file against a true one")
    p.add_argument("pred", metavar="PRED", help="predicted atomic model (xyz, extxyz, ...)")
    p.add_argument("--truth", required=True, metavar="MODEL", help="true atomic model")
    p.add_argument("--radius", type=float, default=1.0, help="matching radius (Å)")
    p.add_argument(
        "--align", action="store_true", help="centre + mean-shift alignment before matching"
    )
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")

    p = sub.add_parser("leaderboard", help="method × dose tables (Markdown, HTML, CSV) and plots")
    p.add_argument(
        "results", nargs="+", metavar="RESULTS", help="RESULTS.jsonl files of aet-bench run"
    )
    p.add_argument("--out", required=True, help="folder for leaderboard.md/.html/.csv/.png")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a leaderboard folder written before"
    )
    p.add_argument("--title", default="AET leaderboard", help="title of the tables and plots")

    p = sub.add_parser(
        "report",
        help="results pages (Markdown) from results files and sweep folders, stamped with "
        "command, commit and dataset sha256",
    )
    p.add_argument(
        "results",
        nargs="+",
        metavar="RESULTS",
        help="RESULTS.jsonl files of aet-bench run and folders of aet-bench sweep",
    )
    p.add_argument("--out", required=True, help="folder for the pages (e.g. docs/results)")
    p.add_argument(
        "--overwrite", action="store_true", help="replace a report folder written before"
    )

    p = sub.add_parser(
        "sweep", help="dose sweep: generate or reuse data, run methods, plot against dose"
    )
    p.add_argument(
        "--dataset", default="dose-sweep", help="dataset of the catalogue (default dose-sweep)"
    )
    p.add_argument(
        "--config",
        default=None,
        help="dataset catalogue (YAML); default: ./datasets.yaml if present, else the one shipped with simgen",
    )
    p.add_argument(
        "--methods", default="classical", help="comma-separated, e.g. classical,unet3d,pann"
    )
    p.add_argument("--store", help="reuse this store instead of generating OUT/<dataset>.zarr")
    p.add_argument("--split", help="only this split (default and 'all': every sample)")
    p.add_argument(
        "--limit",
        type=int,
        help="use at most N samples per dose (a slice that covers every dose)",
    )
    p.add_argument("--workers", type=int, help="Dask workers for generating the data")
    _add_method_arguments(p)
    p.add_argument(
        "--truth",
        help="for damage datasets: initial, final, mean (comma-separated; default initial,final)",
    )
    p.add_argument(
        "--out",
        required=True,
        help="sweep folder (new, empty, or an earlier sweep: resumed and its tables refreshed)",
    )

    p = sub.add_parser(
        "crlb",
        help="Cramér–Rao lower bound of the atom positions of each sample of a store (pm)",
    )
    p.add_argument("store", metavar="STORE", help="simgen Zarr store")
    p.add_argument(
        "--neighbours",
        action="store_true",
        help="joint bound with the neighbouring atoms as nuisance parameters (slower); "
        "default: isolated atoms",
    )
    p.add_argument("--limit", type=int, help="only the first N complete samples")
    p.add_argument("--split", help="only this split (default and 'all': every sample)")

    p = sub.add_parser("speed", help="measure speed ratios (printed as a table)")
    p.add_argument("--quick", action="store_true", help="smaller cases (for a smoke run)")
    p.add_argument(
        "--skip-multislice", action="store_true", help="skip the (slow) abTEM multislice timing"
    )
    return parser


def _truths(text):
    truths = tuple(t.strip() for t in text.split(",") if t.strip())
    bad = [t for t in truths if t not in ("initial", "final", "mean")]
    if bad or not truths:
        raise ValueError(f"--truth={text!r}: expected initial, final or mean (comma-separated)")
    return truths if len(truths) > 1 else truths[0]


def _method_options(args):
    options = {"weights": args.weights} if getattr(args, "weights", None) else {}
    if getattr(args, "model_file", None):
        options["model_file"] = args.model_file
    if getattr(args, "predictions", None):
        options["predictions"] = args.predictions
    for text in getattr(args, "option", None) or []:
        key, sep, value = text.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key.isidentifier():
            raise ValueError(f"--option={text!r}: expected KEY=VALUE with KEY an option name")
        if key in options:
            raise ValueError(f"--option={text!r}: {key} is given twice")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _options_by_method(methods, options) -> dict[str, dict]:
    """Each method's share of the method arguments of ``sweep``: the options it takes.

    An option that no method of the sweep takes is a one-line error (a typo, or the method the
    option was meant for is not in ``--methods``)."""
    from benchmark.methods import _load

    accepted = {}
    for name in methods:
        taken = _load(name).accepted_options()
        accepted[name] = set(options) if taken is None else taken & set(options)
    unused = sorted(set(options) - set().union(*accepted.values())) if accepted else []
    if unused:
        raise ValueError(
            f"{unused[0]}={options[unused[0]]!r}: not an option of any method of "
            f"--methods={','.join(methods)!r}"
        )
    return {name: {k: options[k] for k in sorted(keys)} for name, keys in accepted.items()}


def _check_radius(radius: float) -> None:
    if not (math.isfinite(radius) and radius > 0):
        raise ValueError(f"--radius={radius}: expected a positive matching radius in Å")


def _cmd_run(args) -> int:
    from benchmark.runner import run_method

    _check_radius(args.radius)
    if args.limit_per is not None and args.limit is None:
        raise ValueError(f"--limit-per={args.limit_per!r}: expected --limit N beside it")
    split = None if args.split == "all" else args.split
    records = run_method(
        args.method,
        args.data,
        args.out,
        models_dir=args.models,
        split=split,
        limit=args.limit,
        limit_per=args.limit_per,
        workers=args.workers,
        radius=args.radius,
        align=args.align,
        options=_method_options(args),
        truth=_truths(args.truth),
        overwrite=args.overwrite,
        params=("--out", "--models"),
    )
    print(
        f"wrote {len(records)} results to {args.out}"
        + (f" and models to {args.models}/" if args.models else "")
    )
    return 0


def _cmd_score(args) -> int:
    from benchmark.metrics import score
    from simgen.structures import load_model

    _check_radius(args.radius)
    # An empty prediction is a valid answer: recovery 0, precision undefined.
    pred, truth = load_model(args.pred, allow_empty=True), load_model(args.truth)
    metrics = score(
        pred.get_positions(),
        pred.get_chemical_symbols(),
        truth.get_positions(),
        truth.get_chemical_symbols(),
        radius=args.radius,
        align=args.align,
    )
    if args.json:
        from benchmark.runner import _json_safe

        print(json.dumps(_json_safe(metrics), indent=2))
    else:
        for key, value in metrics.items():
            if isinstance(value, float) and not math.isfinite(value):
                print(f"{key:32s} undefined")
            elif isinstance(value, float):
                print(f"{key:32s} {value:.4g}")
            elif not isinstance(value, dict):
                print(f"{key:32s} {value}")
    return 0


def _cmd_leaderboard(args) -> int:
    from benchmark.leaderboard import write_leaderboard
    from benchmark.runner import read_results
    from simgen.tools.outputs import check_output

    check_output(args.out, "report", overwrite=args.overwrite)  # before reading the results
    paths = write_leaderboard(
        read_results(args.results),
        args.out,
        title=args.title,
        overwrite=args.overwrite,
        param="--out",
    )
    print(Path(paths["md"]).read_text())
    print("wrote " + ", ".join(str(p) for p in paths.values()))
    return 0


def _cmd_report(args) -> int:
    import shlex

    from benchmark.report import write_report

    command = "aet-bench report " + shlex.join([*args.results, "--out", args.out])
    pages = write_report(
        args.results, args.out, command=command, overwrite=args.overwrite, param="--out"
    )
    print("wrote " + ", ".join(str(p) for p in pages))
    return 0


def _cmd_sweep(args) -> int:
    from benchmark.sweep import run_sweep

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit={args.limit}: expected a positive number of samples per dose")
    rows = run_sweep(
        args.out,
        dataset=args.dataset,
        methods=methods,
        store=args.store,
        config=args.config,
        workers=args.workers,
        limit=args.limit,
        split=None if args.split == "all" else args.split,
        truth=_truths(args.truth) if args.truth else None,
        method_options=_options_by_method(methods, _method_options(args)),
        param="--out",
    )
    extra = [
        k
        for k in ("truth", "tilt_scheme", "damage_model", "total_dose")
        if any(k in r for r in rows)
    ]
    print(
        f"{'method':10s} "
        + "".join(f"{k:>14s} " for k in extra)
        + f"{'dose':>9s} {'n':>3s} {'recovery+el %':>14s} {'error pm':>9s} {'raw pm':>9s} "
        f"{'species %':>10s}"
    )
    for r in rows:
        cells = "".join(
            f"{r.get(k, ''):>14.3g} "
            if isinstance(r.get(k), float)
            else f"{str(r.get(k, '')):>14s} "
            for k in extra
        )
        print(
            f"{r['method']:10s} {cells}{r['dose']:9.3g} {r['n']:3d} {r['recovery_rate_species']:14.1f} "
            f"{r['coordinate_error_aet_pm']:9.1f} {r['coordinate_error_pm']:9.1f} "
            f"{r['species_accuracy']:10.1f}"
        )
    claim = Path(args.out) / "claim.md"
    if claim.exists():
        print()
        print(claim.read_text())
    print(f"wrote {args.out}/sweep.csv and {args.out}/sweep.png")
    return 0


def _cmd_crlb(args) -> int:
    from benchmark.crlb import crlb_of_sample, rms_by_element
    from benchmark.detection import detectability_of_sample, recovery_bound
    from simgen.store import open_dataset

    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit={args.limit}: expected a positive integer")
    ds = open_dataset(args.store)
    split = None if args.split == "all" else args.split
    view = ds.filter(split=split) if split else ds
    if len(view) == 0:
        raise ValueError(
            f"STORE={args.store!r}: no complete samples" + (f" in split {split!r}" if split else "")
        )
    spec = dict(ds.attrs).get("spec") or {}
    n = len(view) if args.limit is None else min(args.limit, len(view))
    kind = "joint (neighbours as nuisance)" if args.neighbours else "isolated atom"
    print(f"Cramér–Rao bound of the atom positions, 3D RMS in pm ({kind}), and the recovery bound")
    print("(an optimal detector's recovery at 1% false alarms per candidate, benchmark.detection)")
    print(
        f"{'sample':>6s} {'dose':>9s} {'noise':>12s} {'atoms':>5s}  bound per element (RMS over atoms)"
    )
    summary: dict[tuple, list] = {}
    for k in range(n):
        sample = view[k]
        bound = crlb_of_sample(sample, spec, neighbours=args.neighbours)
        per = rms_by_element(bound, sample["numbers"])
        text = "  ".join(f"{el} {v:.2f}" for el, v in per.items())
        detect = recovery_bound(detectability_of_sample(sample, spec))
        text += f"  | recovery bound {100 * detect:.1f}%"
        print(
            f"{sample['index']:6d} {float(sample.get('dose', float('nan'))):9.3g} "
            f"{str(sample.get('noise_model', '')):>12s} {len(bound):5d}  {text}"
        )
        for el, v in per.items():
            summary.setdefault((float(sample.get("dose", float("nan"))), el), []).append(v)
    print()
    print("mean over samples per dose and element:")
    for (dose, el), values in sorted(
        summary.items(), key=lambda kv: (kv[0][0], kv[0][1] != "all", kv[0][1])
    ):
        print(
            f"  dose {dose:9.3g}  {el:>4s}  {sum(values) / len(values):7.2f} pm  ({len(values)} samples)"
        )
    return 0


def _cmd_speed(args) -> int:
    from benchmark.speed import run_speed

    print(run_speed(quick=args.quick, multislice=not args.skip_multislice))
    return 0


_COMMANDS = {
    "run": _cmd_run,
    "score": _cmd_score,
    "leaderboard": _cmd_leaderboard,
    "sweep": _cmd_sweep,
    "report": _cmd_report,
    "speed": _cmd_speed,
    "crlb": _cmd_crlb,
}


def main(argv=None) -> int:
    from simgen.cli import run_command

    return run_command(_COMMANDS, _build_parser(), argv, "aet-bench")


if __name__ == "__main__":
    sys.exit(main())
