"""Elements from the tilt series: contrast groups, the offset mixture, and reassignment by refit."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.methods import get_method
from benchmark.methods.base import Method, Prediction
from benchmark.methods.refine import refined_method
from models.refine import render_tilt_series
from models.species_refine import (
    ReassignConfig,
    contrast_groups,
    fit_group_mixture,
    reassign_species,
)
from simgen.geometry import volume_center
from simgen.imaging import cross_section

SIZE, SAMPLING, DOSE = 32, 0.4, 1e6
CENTER = volume_center(SIZE, SAMPLING)
ANGLES = np.linspace(-60.0, 60.0, 9)


def _sample(light_scale: float = 1.0, seed: int = 0):
    """A 16-atom Fe/Cu/Pt cluster imaged in linear mode with Poisson noise at 1e6 e/Å².

    ``light_scale`` multiplies the brightness of the Fe and Cu atoms (a calibration offset
    shared by the light atoms, as a detector response or a thickness effect would leave).
    """
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < 16:
        p = CENTER + rng.uniform(-3.8, 3.8, 3)
        if all(np.linalg.norm(p - q) > 2.3 for q in positions):
            positions.append(p)
    positions = np.array(positions)
    truth = ["Fe"] * 6 + ["Cu"] * 6 + ["Pt"] * 4
    light = np.array([e != "Pt" for e in truth])
    images = light_scale * render_tilt_series(
        positions[light], [e for e in truth if e != "Pt"], ANGLES, size=SIZE, sampling=SAMPLING
    ) + render_tilt_series(positions[~light], ["Pt"] * 4, ANGLES, size=SIZE, sampling=SAMPLING)
    counts = rng.poisson(DOSE * images).astype(np.float64)
    sample = {
        "tilt_series": counts,
        "angles": ANGLES,
        "sampling": SAMPLING,
        "dose": DOSE,
        "elements": ["Fe", "Cu", "Pt"],
        "read_noise": 0.0,
        "background": 0.0,
    }
    return sample, positions, truth


def test_contrast_groups_follow_the_z_gap():
    assert contrast_groups(["Pt", "Fe", "Cu", "Co", "Ni"]) == [["Fe", "Co", "Ni", "Cu"], ["Pt"]]
    assert contrast_groups(["Pt", "Au", "Pd"]) == [["Pd"], ["Pt", "Au"]]
    assert contrast_groups(["Fe", "Ni", "Pt"], max_z_gap=1) == [["Fe"], ["Ni"], ["Pt"]]
    assert contrast_groups(["Fe", "Cu"], max_z_gap=3) == [["Fe", "Cu"]]  # Z 26, 29
    assert contrast_groups(["Fe", "Zn"], max_z_gap=3) == [["Fe"], ["Zn"]]  # Z 26, 30
    with pytest.raises(ValueError, match="max_z_gap=0"):
        contrast_groups(["Fe"], max_z_gap=0)


def test_mixture_recovers_a_shared_offset_and_the_labels():
    rng = np.random.default_rng(4)
    reference = np.log([cross_section(e) for e in ("Fe", "Co", "Ni", "Cu")])
    truth = rng.integers(0, 4, 400)
    x = reference[truth] + 0.15 + rng.normal(0.0, 0.01, truth.size)
    fit = fit_group_mixture(x, reference, elements=["Fe", "Co", "Ni", "Cu"])
    assert fit.offset == pytest.approx(0.15, abs=0.003)
    assert fit.width == pytest.approx(0.01, rel=0.15)
    assert np.mean(fit.labels == truth) > 0.99
    assert np.allclose(fit.posteriors.sum(axis=1), 1.0)
    # The standard errors floor the width: 0.05 everywhere -> width exactly 0.05.
    floored = fit_group_mixture(x, reference, standard_errors=np.full(x.size, 0.05))
    assert floored.width == pytest.approx(0.05)
    # Equal weights: a skewed sample still gets the right labels and weights stay 1/4.
    equal = fit_group_mixture(x, reference, equal_weights=True)
    assert np.allclose(equal.weights, 0.25)
    assert np.mean(equal.labels == truth) > 0.99
    # Two atoms exactly on two means: offset, labels and weights by hand.
    exact = fit_group_mixture(reference[[0, 3]] - 0.2, reference, width_floor=0.01)
    assert exact.offset == pytest.approx(-0.2, abs=1e-6)
    assert list(exact.labels) == [0, 3]
    assert exact.weights[[0, 3]] == pytest.approx([0.5, 0.5], abs=1e-6)


def test_wrong_labels_are_corrected_and_singletons_kept():
    sample, positions, truth = _sample()
    labels = ["Cu" if e == "Fe" else "Fe" if e == "Cu" else e for e in truth]  # all swapped
    labels[0] = "Pt"  # an Fe atom called Pt: Pt is a group of one, never relabelled
    result = reassign_species(
        sample,
        positions,
        labels,
        config=ReassignConfig(positions="fixed", use_standard_errors=True),
    )
    assert result.groups == [["Fe", "Cu"], ["Pt"]]
    assert result.elements[0] == "Pt"
    assert result.elements[12:] == ["Pt"] * 4
    light = slice(1, 12)
    assert np.mean(np.array(result.elements[light]) == np.array(truth[light])) >= 0.95
    assert result.changed.sum() == 11
    assert result.classes == ["Fe", "Cu", "Pt"]
    assert np.allclose(result.posteriors.sum(axis=1), 1.0)
    assert np.all(result.posteriors[12:, 2] == 1.0)
    # fixed positions: the refit did not move the atoms
    assert np.allclose(result.positions, positions)


def test_a_calibration_offset_on_the_light_atoms_is_absorbed_by_the_offset():
    sample, positions, truth = _sample(light_scale=1.3, seed=1)
    labels = ["Fe"] * 12 + ["Pt"] * 4  # every light atom called Fe
    result = reassign_species(sample, positions, labels, config=ReassignConfig(positions="joint"))
    assert result.elements == truth
    fit = result.fits["Fe,Cu"]
    assert fit.offset == pytest.approx(math.log(1.3), abs=0.03)
    # Without the offset, nearest calibrated σ would call the brighter Fe atoms Cu.
    nearest = np.abs(
        result.log_cross_sections[:6, None]
        - np.log([cross_section("Fe"), cross_section("Cu")])[None, :]
    ).argmin(axis=1)
    assert np.all(nearest == 1)


def test_no_group_of_two_means_no_refit_and_no_change():
    sample, positions, truth = _sample()
    labels = ["Fe" if e != "Pt" else "Pt" for e in truth]
    result = reassign_species(sample, positions, labels, present=["Fe", "Pt"])
    assert result.elements == labels
    assert not result.changed.any()
    assert result.fits == {}


class _FixedAtoms(Method):
    """A base method that returns given atoms (a stand-in for a detector with wrong labels)."""

    atoms: tuple = ()

    def predict(self, sample):
        positions, labels = self.atoms
        return Prediction(positions, labels)


def test_refine_method_option_reassigns_and_reports_posteriors():
    sample, positions, truth = _sample(seed=2)
    labels = ["Fe"] * 12 + ["Pt"] * 4
    base = type("_Base", (_FixedAtoms,), {"atoms": (positions, labels)})
    cls = refined_method("fixed", base)
    plain = cls(iterations=30).predict(sample)
    assert plain.elements == labels
    method = cls(iterations=30, reassign=True, reassign_positions="fixed")
    prediction = method.predict(sample)
    assert prediction.elements == truth
    assert prediction.extra["base_elements"] == labels
    assert prediction.extra["classes"] == ["Fe", "Cu", "Pt"]
    assert prediction.confidence.shape == (16, 3)
    assert prediction.extra["species_changed"] == 6


@pytest.mark.parametrize(
    "options, name",
    [
        ({"reassign": "yes"}, "reassign="),
        ({"reassign": True, "reassign_positions": "moving"}, "reassign_positions="),
        ({"reassign": True, "reassign_max_z_gap": 0}, "reassign_max_z_gap="),
        ({"reassign": True, "reassign_width_floor": -0.1}, "reassign_width_floor="),
        ({"reassign": True, "reassign_starts": 0}, "reassign_starts="),
        ({"reassign": True, "reassign_weights": "fixed"}, "reassign_weights="),
        ({"reassign_positions": "joint"}, "reassign_positions"),
    ],
)
def test_bad_reassign_options_raise_one_line_errors(options, name):
    with pytest.raises(ValueError, match=name) as error:
        get_method("classical+refine", **options)
    assert "\n" not in str(error.value)


def _network_probabilities(classes, labels, confidence=0.7):
    """Rows that give ``confidence`` to each atom's label and the rest evenly to other classes."""
    probabilities = np.full((len(labels), len(classes)), (1 - confidence) / (len(classes) - 1))
    probabilities[np.arange(len(labels)), [classes.index(e) for e in labels]] = confidence
    return probabilities


def test_pann_names_a_contrast_group_from_the_tilt_series():
    from models.pann import PannModel
    from models.weights import DEFAULT_WEIGHTS

    model = PannModel.load(DEFAULT_WEIGHTS)
    assert model.config.reassign  # the shipped weights reassign by default
    sample, positions, truth = _sample(seed=2)
    labels = ["Fe"] * 12 + ["Pt"] * 4  # the network cannot tell Cu from Fe
    classes = list(model.config.classes)
    probabilities = _network_probabilities(classes, labels)
    extra = {}
    moved, named, rows = model._reassign(
        sample, positions, labels, probabilities, ["Fe", "Cu", "Pt"], extra
    )
    assert named == truth
    assert extra["base_elements"] == labels and extra["species_changed"] == 6
    assert extra["species_groups"] == [["Fe", "Cu"]]
    # each row keeps its total, the group's share now follows the reassignment
    np.testing.assert_allclose(rows.sum(axis=1), probabilities.sum(axis=1))
    assert [classes[k] for k in rows.argmax(axis=1)] == truth
    np.testing.assert_array_equal(rows[12:], probabilities[12:])  # Pt rows untouched
    assert moved.shape == positions.shape and np.abs(moved - positions).max() < 0.5


def test_pann_reassignment_is_a_no_op_without_a_contrast_group(monkeypatch):
    import models.species_refine
    from models.pann import PannConfig, PannModel
    from models.weights import DEFAULT_WEIGHTS

    model = PannModel.load(DEFAULT_WEIGHTS)

    def refit(*args, **kwargs):
        raise AssertionError("no contrast group of two elements: nothing to refit")

    monkeypatch.setattr(models.species_refine, "reassign_species", refit)
    sample, positions, truth = _sample()
    labels = ["Fe" if e != "Pt" else "Pt" for e in truth]
    probabilities = _network_probabilities(list(model.config.classes), labels)
    extra = {}
    out = model._reassign(sample, positions, labels, probabilities, ["Fe", "Pt"], extra)
    assert out[0] is positions and out[1] is labels and out[2] is probabilities and extra == {}
    # checkpoints written before the option existed predict as they did: no reassignment
    old = {k: v for k, v in model.config.to_dict().items() if k != "reassign"}
    assert PannConfig.from_dict(old).reassign is False
    assert get_method("pann", reassign=False).model.config.reassign is False


def test_pann_reassign_option_must_be_a_boolean():
    with pytest.raises(ValueError, match="reassign='yes': expected true or false"):
        get_method("pann", reassign="yes")


def test_pann_without_the_tilt_series_warns_that_a_contrast_group_stays_unresolved(caplog):
    import logging

    from models.pann import PannModel
    from models.weights import DEFAULT_WEIGHTS

    model = PannModel.load(DEFAULT_WEIGHTS)
    sample, positions, truth = _sample()
    volume = np.zeros((SIZE,) * 3, dtype=np.float32)
    for x, y, z in positions / SAMPLING:
        volume[int(round(z)), int(round(y)), int(round(x))] = 1.0
    from scipy.ndimage import gaussian_filter

    volume = gaussian_filter(volume, 1.5)
    with caplog.at_level(logging.WARNING, logger="models.pann"):
        model.predict(volume, SAMPLING, ["Fe", "Cu", "Pt"])
    assert "['Fe', 'Cu']" in caplog.text and "tilt series" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.pann"):
        model.predict(volume, SAMPLING, ["Fe", "Pt"])
    assert "tilt series" not in caplog.text
