"""The three CLIs: instant help, one-line errors with a non-zero exit, nothing half-written."""

import subprocess
import sys

import pytest

from simgen.cli import main as simgen_main
from simgen.cli import parse_tilt


@pytest.mark.parametrize("module", ["simgen.cli", "models.cli", "benchmark.cli"])
def test_help(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0
    assert "usage" in result.stdout


def test_simgen_import_does_not_import_torch():
    code = "import simgen, simgen.cli, simgen.sample, simgen.catalog; import sys; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"


def test_parse_tilt():
    angles = parse_tilt("-60:60:5")
    assert angles == (-60.0, -30.0, 0.0, 30.0, 60.0)
    for bad in ["-60:60", "a:b:c", "60:-60:5", "-60:60:1", "-95:60:5"]:
        with pytest.raises(ValueError, match="--tilt"):
            parse_tilt(bad)


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["simulate", "missing.xyz", "--out", "{tmp}/s.zarr"], "missing.xyz"),
        (
            [
                "simulate",
                "--particle",
                "cuboctahedron",
                "--composition",
                "Xx",
                "--out",
                "{tmp}/s.zarr",
            ],
            "Xx",
        ),
        (
            [
                "simulate",
                "--particle",
                "cuboctahedron",
                "--tilt",
                "10:0:5",
                "--out",
                "{tmp}/s.zarr",
            ],
            "--tilt",
        ),
        (["generate", "no-such-dataset", "--dry-run"], "no-such-dataset"),
    ],
)
def test_bad_input_one_line_error_nothing_written(tmp_path, capsys, argv, fragment):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code = simgen_main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("simgen: error:") and len(err.splitlines()) == 1
    assert fragment in err
    assert not (tmp_path / "s.zarr").exists()


def _all_parsers():
    """Every (sub)parser of the three CLIs, with its program name."""
    import argparse

    from benchmark.cli import _build_parser as bench_parser
    from models.cli import _build_parser as pann_parser
    from simgen.cli import _build_parser as simgen_parser

    for build in (simgen_parser, pann_parser, bench_parser):
        parser = build()
        yield parser.prog, parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield f"{parser.prog} {name}", sub


def test_every_option_has_a_line_of_help():
    import argparse

    missing = [
        f"{prog}: {'/'.join(action.option_strings) or action.dest}"
        for prog, parser in _all_parsers()
        for action in parser._actions
        if not isinstance(action, (argparse._HelpAction, argparse._SubParsersAction))
        and not action.help
    ]
    assert not missing, "options without help:\n" + "\n".join(missing)


def test_simgen_list_prints_every_registry(capsys):
    from simgen.damage import DAMAGE_MODELS
    from simgen.physics.noise import NOISE_MODELS
    from simgen.structures import MORPHOLOGY_REGISTRY

    assert simgen_main(["list"]) == 0
    out = capsys.readouterr().out
    for name, morphology in MORPHOLOGY_REGISTRY.items():
        assert f"  {name}(" in out
        for option in morphology.options:
            assert f"{option}:" in out
    for name in [*NOISE_MODELS, *DAMAGE_MODELS]:
        assert f"  {name}: " in out
    assert "sigma=1.0 counts per pixel" in out  # read noise: default and unit from the registry
    assert "L10:FePt" in out and "core-shell:Ni@Pt" in out
    assert simgen_main(["list", "noise"]) == 0
    only_noise = capsys.readouterr().out
    assert "poisson" in only_noise and "cuboctahedron" not in only_noise
    # the extension points without parameters, from their one definition (simgen.registry)
    from simgen.registry import ALIGNMENT_METHODS, IMAGING_MODES, RECONSTRUCTION_METHODS

    for topic, names in [
        ("imaging", IMAGING_MODES),
        ("reconstruction", RECONSTRUCTION_METHODS),
        ("alignment", ALIGNMENT_METHODS),
    ]:
        assert simgen_main(["list", topic]) == 0
        text = capsys.readouterr().out
        assert ", ".join(names) in text and "poisson" not in text, text
        assert ", ".join(names) in out  # and in the full list


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_works_before_and_after_the_subcommand(tmp_path, capsys, where):
    missing = str(tmp_path / "missing.zarr")
    argv = ["--debug", "inspect", missing] if where == "before" else ["inspect", missing, "--debug"]
    with pytest.raises((ValueError, OSError)):  # --debug: the traceback, not the one-line error
        simgen_main(argv)
    assert simgen_main(["inspect", missing]) == 2
    assert capsys.readouterr().err.startswith("simgen: error:")


def test_ordered_phase_on_a_twinned_particle_is_recorded_in_the_store(
    tmp_path, caplog, monkeypatch
):
    from simgen.store import open_dataset
    from simgen.structures import ordering

    monkeypatch.setattr(ordering, "_WARNED", set())  # the warning is logged once per process

    out = tmp_path / "ico.zarr"
    argv = ["simulate", "--particle", "icosahedron", "--composition", "L10:FePt"]
    argv += ["--size-nm", "0.8", "--tilt", "-60:60:5", "--sampling", "0.5", "--iterations", "3"]
    assert simgen_main([*argv, "--seed", "17", "--out", str(out)]) == 0
    sample = open_dataset(out)[0]
    assert sample["composition"] == "L10:FePt" and sample["ordering"] == "alloy"
    assert sample["seed"] == 17  # --seed is recorded in /meta/seed
    assert "made a random alloy" in caplog.text  # a warning: shown on the terminal too


def test_generated_store_records_the_ordering_of_each_sample(smoke_store):
    from simgen.store import open_dataset
    from simgen.structures import realised_ordering

    ds = open_dataset(smoke_store)
    for i in range(len(ds)):
        sample = ds[i]
        expected = realised_ordering(sample["morphology"], sample["composition"])
        assert sample["ordering"] == expected
        assert expected == ("L10" if sample["composition"] == "L10:FePt" else "element")


def test_import_align_takes_the_alignment_methods():
    """``simgen import --align`` has simulate's choices (simgen.reconstruction.alignment.METHODS); a bare
    ``--align`` is still cross-correlation."""
    from simgen import cli
    from simgen.catalog.validation import ALIGN_METHODS, MODES, RECON_METHODS
    from simgen.physics import imaging
    from simgen.reconstruction import alignment, reconstruct
    from simgen.registry import ALIGNMENT_METHODS, IMAGING_MODES, RECONSTRUCTION_METHODS

    # one definition per extension point, read by the implementation and the catalogue
    assert ALIGN_METHODS is alignment.METHODS is ALIGNMENT_METHODS
    assert RECON_METHODS is reconstruct.METHODS is RECONSTRUCTION_METHODS
    assert MODES is imaging._MODES is IMAGING_MODES
    parser = cli._build_parser()
    base = ["import", "ts.npy", "--angles", "a.txt", "--sampling", "0.5", "--out", "o.zarr"]
    assert parser.parse_args(base).align == "none"
    assert parser.parse_args([*base, "--align"]).align == "cross_correlation"
    assert parser.parse_args([*base, "--align", "com"]).align == "com"
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--align", "sideways"])


def test_simgen_list_prints_codecs_from_the_spec_registry(capsys):
    assert simgen_main(["list", "codecs"]) == 0
    out = capsys.readouterr().out
    assert "  float16: " in out and "  bitround: " in out and "K=23" in out


def test_subcommand_help_names_the_registered_models_and_simgen_help_stays_light():
    """``simulate --help`` and ``generate --help`` list the noise (and damage) model names of the
    spec registries; ``simgen --help`` does not import the model modules to do so."""
    import subprocess
    import sys

    from simgen.damage import DAMAGE_REGISTRY
    from simgen.physics.noise import NOISE_REGISTRY

    def help_text(*args):
        code = (
            "import sys; from simgen.cli import main\n"
            "try: main(sys.argv[1:])\n"
            "except SystemExit: pass\n"
            "print('LOADED', 'simgen.physics.noise' in sys.modules, 'numpy' in sys.modules)"
        )
        run = subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, check=True
        )
        return " ".join(run.stdout.split())  # undo argparse's line wrapping

    simulate = help_text("simulate", "--help")
    assert "noise models: " + ", ".join(NOISE_REGISTRY.names()) + ";" in simulate
    generate = help_text("generate", "--help")
    assert "noise models: " + ", ".join(NOISE_REGISTRY.names()) in generate
    assert "damage models: " + ", ".join(DAMAGE_REGISTRY.names()) in generate
    assert "<MODEL NAMES>" not in simulate + generate
    assert help_text("--help").endswith("LOADED False False")
