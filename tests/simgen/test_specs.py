"""Tests of the spec registry (simgen/registry.py): one parser and one declaration per model."""

from __future__ import annotations

import pytest

from simgen.damage import DAMAGE_REGISTRY, KnockOn, SurfaceDiffusion, parse_damage
from simgen.physics.noise import NOISE_REGISTRY, ReadNoise, parse_noise
from simgen.registry import REGISTRIES, Param, Registry, split_spec


def test_every_kind_is_registered():
    import simgen.store.codecs  # noqa: F401 (registers the codecs)
    import simgen.structures  # noqa: F401 (registers the morphologies)

    assert {"noise", "damage", "codec", "morphology"} <= set(REGISTRIES)
    assert REGISTRIES["noise"] is NOISE_REGISTRY and REGISTRIES["damage"] is DAMAGE_REGISTRY
    assert "icosahedron" in REGISTRIES["morphology"]
    bits = REGISTRIES["codec"].models["bitround"].params[0]
    assert (bits.minimum, bits.maximum, bits.kind) == (1, 23, int)


def test_one_parser_for_noise_and_damage():
    """The same syntax errors, worded the same way, from both registries."""
    for registry, text, key in (
        (NOISE_REGISTRY, "read", "sigma"),
        (DAMAGE_REGISTRY, "knock_on", "energy"),
    ):
        kind = registry.kind
        with pytest.raises(ValueError, match=rf"^{kind} '{text}': {key}: missing '=value'"):
            registry.parse(f"{text}:{key}")
        with pytest.raises(ValueError, match=rf"^{kind} '{text}': {key} given twice"):
            registry.parse(f"{text}:{key}=1,{key}=2")
        with pytest.raises(ValueError, match=rf"^{kind} '{text}': unknown key 'bogus'"):
            registry.parse(f"{text}:bogus=1")
        with pytest.raises(ValueError, match=rf"^{kind}='nothing': unknown model 'nothing'"):
            registry.parse("nothing")


def test_parsed_models_and_declared_parameters():
    assert parse_noise(" read : sigma = 2.5 ") == ReadNoise(sigma=2.5)
    model = parse_damage("knock_on:threshold_Pt=30,cn_bulk=8,sputter=never", energy=80e3)
    assert model == KnockOn(energy=80e3, cn_bulk=8, sputter="never", thresholds={"Pt": 30.0})
    assert isinstance(model.cn_bulk, int)
    # a default from the caller never overrides the text, and is ignored by models without it
    assert parse_damage("knock_on:energy=300e3", energy=80e3).energy == 300e3
    assert parse_damage("surface_diffusion", energy=80e3) == SurfaceDiffusion()
    with pytest.raises(ValueError, match=r"cn_bulk='2\.5': expected an integer"):
        parse_damage("knock_on:cn_bulk=2.5")
    params = {p.key: p for p in DAMAGE_REGISTRY.models["knock_on"].params}
    assert params["energy"].unit == "eV" and params["energy"].default == 200e3
    assert params["threshold_<Element>"].prefix
    assert "Beam kinetic energy" in params["energy"].doc  # from the numpydoc docstring


def test_a_registry_of_functions_reads_keyword_arguments():
    def shape(size_nm: float, *, shells: int = 3, label: str = "a"):
        """A shape.

        Parameters
        ----------
        shells
            Number of shells.
        """
        return (size_nm, shells, label)

    registry = Registry("test")
    registry.register("shape", shape)
    (shells, label) = registry.models["shape"].params
    assert (shells.name, shells.default, shells.kind, shells.doc) == (
        "shells",
        3,
        int,
        "Number of shells.",
    )
    assert label.kind is str
    assert registry.describe() == [
        "  shape: A shape.",
        "      shells=3: Number of shells.",
        "      label='a': ",
    ]
    with pytest.raises(ValueError, match=r"test 'shape': shells='x': expected an integer"):
        registry.parse_values("shape:shells=x")
    assert Param("sigma", 1.0, "Å", minimum=0.0).expected() == "a finite number >= 0.0 (Å)"


def test_split_spec():
    assert split_spec("a: k = 1 ,, j=x") == ("a", [("k", True, "1"), ("j", True, "x")])


def test_specs_travel_parsed_and_render_back_to_their_text():
    """A catalogue's noise and damage specs are parsed once (``Spec``: text + model) and reach the
    sample parsed; what is recorded (``DatasetSpec.to_dict``, ``SampleSpec.to_dict``) is the text
    exactly as written, not the model's canonical form (``sigma=1`` stays ``sigma=1``)."""
    import pickle

    from simgen.catalog import DatasetSpec, get_dataset
    from simgen.damage import DamageChain
    from simgen.physics.noise import NoiseChain
    from simgen.registry import Spec

    data = get_dataset("smoke").to_dict()
    data["noise_models"] = {"custom": ["poisson", "read:sigma=1"]}
    data["damage_models"] = {"hop": ["surface_diffusion:rate=2e-4"]}
    spec = DatasetSpec.from_dict("smoke", data)
    (preset, specs), (_, damage) = spec.noise_models[0], spec.damage_models[0]
    assert preset == "custom" and all(isinstance(s, Spec) for s in specs + damage)
    assert specs[1].model == ReadNoise(sigma=1.0) and specs[1].model.spec() == "read:sigma=1.0"
    assert damage[0].model == SurfaceDiffusion(rate=2e-4)
    assert spec.to_dict()["noise_models"] == {"custom": ["poisson", "read:sigma=1"]}
    assert spec.to_dict()["damage_models"] == {"hop": ["surface_diffusion:rate=2e-4"]}
    assert DatasetSpec.from_dict("smoke", spec.to_dict()) == spec

    sample = spec.plan(1)[0]
    assert sample.noise == ("poisson", "read:sigma=1")  # compares as the text
    assert sample.noise[1].model is specs[1].model  # the parsed model itself, not re-parsed
    record = sample.to_dict()
    assert record["noise"] == ("poisson", "read:sigma=1")
    assert all(type(s) is str for s in record["noise"] + record["damage"])
    assert (
        NoiseChain.from_specs(sample.noise).models == NoiseChain.from_specs(record["noise"]).models
    )
    assert DamageChain.from_specs(sample.damage).models == (SurfaceDiffusion(rate=2e-4),)
    assert pickle.loads(pickle.dumps(sample)) == sample  # travels to Dask workers
    assert str(NOISE_REGISTRY.parse_spec("read:sigma=1")) == "read:sigma=1"
