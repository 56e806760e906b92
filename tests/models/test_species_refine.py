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
    fit_species_mixture,
    integrated_intensities,
    reassign_species,
    species_from_volume,
    species_posteriors,
)
from simgen.physics.geometry import volume_center
from simgen.physics.imaging import cross_section

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


def _pdpt_sample(dose: float, seed: int = 0):
    """A 16-atom Pd@Pt cluster (8 Pd in the middle, 8 Pt outside) in linear mode, Poisson noise."""
    rng = np.random.default_rng(seed)
    positions = []
    while len(positions) < 16:
        p = CENTER + rng.uniform(-3.8, 3.8, 3)
        if all(np.linalg.norm(p - q) > 2.3 for q in positions):
            positions.append(p)
    positions = np.array(positions)
    order = np.argsort(np.linalg.norm(positions - CENTER, axis=1))
    positions = positions[order]
    truth = ["Pd"] * 8 + ["Pt"] * 8
    images = render_tilt_series(positions, truth, ANGLES, size=SIZE, sampling=SAMPLING)
    sample = {
        "tilt_series": rng.poisson(dose * images).astype(np.float64),
        "angles": ANGLES,
        "sampling": SAMPLING,
        "dose": dose,
        "elements": ["Pd", "Pt"],
        "read_noise": 0.0,
        "background": 0.0,
    }
    return sample, positions, truth


def test_mixture_recovers_one_global_scale_and_the_labels():
    rng = np.random.default_rng(4)
    elements = ["Fe", "Co", "Ni", "Cu", "Pt"]
    reference = np.log([cross_section(e) for e in elements])
    truth = rng.integers(0, 5, 400)
    x = reference[truth] + 0.15 + rng.normal(0.0, 0.01, truth.size)
    prior = np.full((truth.size, 5), 0.2)  # no prior information
    fit = fit_species_mixture(x, reference, prior, elements=elements, width_floor=0.005)
    assert fit.offset == pytest.approx(0.15, abs=0.003)
    assert fit.width == pytest.approx(0.01, rel=0.2)
    assert np.mean(fit.labels == truth) > 0.99
    np.testing.assert_allclose(fit.posteriors.sum(axis=1), 1.0)
    np.testing.assert_array_equal(fit.labels, fit.posteriors.argmax(axis=1))
    # Standard errors add to the width: s = 0.05 everywhere, no excess scatter left for w.
    se = np.full(x.size, 0.05)
    wide = fit_species_mixture(x, reference, prior, standard_errors=se, width_floor=0.005)
    assert wide.width == pytest.approx(0.005)
    # Two atoms exactly on the Fe and Pt means, shifted by -0.2: the scale by hand, and the
    # posterior of a measurement 1.5 log units from the other element is ~1.
    exact = fit_species_mixture(
        reference[[0, 4]] - 0.2, reference, np.full((2, 5), 0.2), width_floor=0.01
    )
    assert exact.offset == pytest.approx(-0.2, abs=1e-6)
    assert list(exact.labels) == [0, 4]


def test_posterior_is_prior_times_likelihood_by_hand():
    """One atom halfway (in log σ) between Pd and Pt with s = 0.2, w at its floor: the likelihood
    ratio is 1, so the posterior is the prior; a measurement on the Pd mean gives odds
    prior_odds × exp(Δ² / 2v) for Pd."""
    reference = np.log([cross_section("Pd"), cross_section("Pt")])
    delta = reference[1] - reference[0]
    prior = np.array([[0.3, 0.7], [0.3, 0.7], [0.5, 0.5], [0.5, 0.5]])
    x = np.array([reference.mean(), reference[0], reference[0], reference[1]])
    se = np.full(4, 0.2)
    fit = fit_species_mixture(x, reference, prior, standard_errors=se, width_floor=1e-3, starts=1)
    assert fit.offset == pytest.approx(0.0, abs=0.05)
    v = 0.2**2 + fit.width**2
    # the offset moves the means a little; recompute the exact odds from the fitted offset
    mid = x[0] - reference - fit.offset
    expected = (
        0.3
        * np.exp(-0.5 * mid[0] ** 2 / v)
        / (0.3 * np.exp(-0.5 * mid[0] ** 2 / v) + 0.7 * np.exp(-0.5 * mid[1] ** 2 / v))
    )
    assert fit.posteriors[0, 0] == pytest.approx(expected, rel=1e-9)
    assert fit.posteriors[0, 0] == pytest.approx(0.3, abs=0.1)
    odds = fit.posteriors[1, 0] / fit.posteriors[1, 1]
    on_pd = x[1] - reference - fit.offset
    assert odds == pytest.approx(
        (0.3 / 0.7) * np.exp(-0.5 * (on_pd[0] ** 2 - on_pd[1] ** 2) / v), rel=1e-9
    )
    assert odds > 100 * (0.3 / 0.7)  # Δ = 0.88 at s = 0.2: the measurement wins
    assert abs(on_pd[1]) == pytest.approx(delta, abs=0.05)


def test_a_confident_wrong_prior_cannot_move_the_scale():
    """Every atom called Pt with certainty: the measurement alone fits the one scale, so the
    two clusters of log σ land on Co/Ni and Pd/Pt and are named right (no label shift)."""
    rng = np.random.default_rng(0)
    elements = ["Co", "Ni", "Pd", "Pt"]
    reference = np.log([cross_section(e) for e in elements])
    truth = rng.integers(0, 4, 200)
    x = reference[truth] + 0.2 + rng.normal(0.0, 0.1, truth.size)
    labels, fit = species_posteriors(
        x, ["Pt"] * truth.size, elements, standard_errors=np.full(truth.size, 0.1)
    )
    assert fit.offset == pytest.approx(0.2, abs=0.03)
    heavy = truth >= 2
    assert np.mean(np.array(labels)[heavy] == np.array(elements)[truth[heavy]]) > 0.95
    assert np.all(np.isin(np.array(labels)[~heavy], ["Co", "Ni"]))


def test_the_scale_prior_shrinks_the_global_scale_by_hand():
    """Four Pd atoms exactly 0.3 above their calibrated log σ, s = 0.1, scale prior 0.1: the MAP
    scale is 0.3 · (4/v) / (4/v + 1/0.1²) = 0.24 with v = 0.1² + w², w at its floor 1e-3 (the
    residual 0.06 is below s, so no excess width)."""
    reference = np.log([cross_section("Pd"), cross_section("Pt")])
    fit = fit_species_mixture(
        np.full(4, reference[0] + 0.3),
        reference,
        np.tile([0.99, 0.01], (4, 1)),
        standard_errors=np.full(4, 0.1),
        width_floor=1e-3,
        scale_prior=0.1,
        starts=1,
    )
    v = 0.1**2 + 1e-6
    assert fit.width == pytest.approx(1e-3)
    assert fit.offset == pytest.approx(0.3 * (4 / v) / (4 / v + 100.0), rel=1e-3)
    assert list(fit.labels) == [0, 0, 0, 0]


def test_measurement_overrules_a_wrong_network_on_pd_pt():
    """Pd@Pt at 2e3 e/Å²: stage 2 calls every atom Pt with probability 0.95; the refit names
    the Pd core right (σ ratio Pt/Pd ≈ 2.4)."""
    sample, positions, truth = _pdpt_sample(2e3)
    prior = np.tile([0.05, 0.95], (16, 1))
    result = reassign_species(sample, positions, ["Pt"] * 16, prior=prior)
    assert result.classes == ["Pd", "Pt"]
    assert result.elements == truth
    assert result.changed.sum() == 8
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0)
    assert [result.classes[k] for k in result.posteriors.argmax(axis=1)] == result.elements
    assert np.all(result.max_posterior > 0.9)
    assert abs(result.fit.offset) < 0.1  # known dose, calibrated σ: the scale is ~1


def test_the_prior_decides_fe_co_where_the_measurement_cannot():
    """Fe/Co (σ ratio 1.08) at 2e3 e/Å²: the per-atom standard error exceeds the spacing, so a
    right prior keeps every label and a uniform prior leaves the posterior near 1/2."""
    sample, positions, truth = _sample(seed=3)
    sample = {**sample, "dose": 2e3, "elements": ["Fe", "Co", "Pt"]}
    rng = np.random.default_rng(3)
    truth = ["Fe"] * 6 + ["Co"] * 6 + ["Pt"] * 4
    images = render_tilt_series(positions, truth, ANGLES, size=SIZE, sampling=SAMPLING)
    sample["tilt_series"] = rng.poisson(2e3 * images).astype(np.float64)
    classes = ["Fe", "Co", "Pt"]
    prior = np.array([[0.9, 0.08, 0.02] if e == "Fe" else [0.08, 0.9, 0.02] for e in truth[:12]])
    prior = np.vstack([prior, np.tile([0.02, 0.02, 0.96], (4, 1))])
    result = reassign_species(
        sample, positions, truth, prior=prior, config=ReassignConfig(positions="fixed")
    )
    assert result.classes == classes
    assert result.elements == truth
    assert np.median(result.standard_errors[:12]) > math.log(
        cross_section("Co") / cross_section("Fe")
    )
    # the Fe/Co posteriors stay near the prior's 0.9 / (0.9 + 0.08), not near 1
    light = result.posteriors[:12, :2].max(axis=1)
    assert np.median(light) < 0.99
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0)


def test_no_label_swap_at_low_dose():
    """316 e/Å², a right but soft prior (0.7): the species step may not do worse than the prior's
    labels (the trap of a free per-group offset: a whole group shifted one element along)."""
    sample, positions, truth = _pdpt_sample(316.0, seed=5)
    prior = np.array([[0.7, 0.3] if e == "Pd" else [0.3, 0.7] for e in truth])
    result = reassign_species(sample, positions, truth, prior=prior)
    right = np.mean(np.array(result.elements) == np.array(truth))
    assert right >= 0.9
    assert abs(result.fit.offset) < 0.3
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0)


def test_wrong_labels_are_corrected_and_rows_sum_to_one():
    sample, positions, truth = _sample()
    labels = ["Cu" if e == "Fe" else "Fe" if e == "Cu" else e for e in truth]  # light swapped
    labels[0] = "Pt"  # an Fe atom called Pt: σ ratio 5, the measurement overrules it
    result = reassign_species(sample, positions, labels, config=ReassignConfig(positions="fixed"))
    assert result.classes == ["Fe", "Cu", "Pt"]
    assert result.groups == [["Fe", "Cu"], ["Pt"]]
    assert result.elements[0] == "Fe"
    assert result.elements[12:] == ["Pt"] * 4
    assert np.mean(np.array(result.elements) == np.array(truth)) >= 0.9
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0)
    assert [result.classes[k] for k in result.posteriors.argmax(axis=1)] == result.elements
    # fixed positions: the refit did not move the atoms
    assert np.allclose(result.positions, positions)


def test_a_global_calibration_scale_is_absorbed():
    sample, positions, truth = _sample(seed=1)
    sample = {**sample, "tilt_series": sample["tilt_series"] * 1.3}  # e.g. a detector gain
    labels = ["Fe"] * 12 + ["Pt"] * 4  # every light atom called Fe
    result = reassign_species(sample, positions, labels, config=ReassignConfig(positions="joint"))
    assert result.fit.offset == pytest.approx(math.log(1.3), abs=0.05)
    assert result.elements[12:] == ["Pt"] * 4
    assert np.mean(np.array(result.elements) == np.array(truth)) >= 0.9


def test_one_element_means_no_refit_and_no_change(monkeypatch):
    import models.refine

    def refit(*args, **kwargs):
        raise AssertionError("one element present: nothing to refit")

    monkeypatch.setattr(models.refine, "refine_sample", refit)
    sample, positions, _ = _sample()
    result = reassign_species(sample, positions, ["Pt"] * 16, present=["Pt"])
    assert result.elements == ["Pt"] * 16
    assert not result.changed.any() and result.fit is None
    np.testing.assert_array_equal(result.posteriors, np.ones((16, 1)))


def test_species_from_volume_uses_integrated_intensities():
    """No tilt series: a volume of Gaussian blobs with weights σ(Z) names Pd and Pt from the
    integrated intensities even against a wrong prior, up to one unknown scale."""
    from scipy.ndimage import gaussian_filter

    _, positions, truth = _pdpt_sample(2e3)
    volume = np.zeros((SIZE,) * 3)
    for (x, y, z), e in zip(positions, truth):
        volume[int(round(z / SAMPLING)), int(round(y / SAMPLING)), int(round(x / SAMPLING))] += (
            7.0 * cross_section(e)
        )
    volume = gaussian_filter(volume, 0.6 / SAMPLING)
    snapped = np.rint(positions / SAMPLING) * SAMPLING
    result = species_from_volume(
        volume,
        snapped,
        SAMPLING,
        ["Pt"] * 16,
        present=["Pd", "Pt"],
        prior=np.tile([0.2, 0.8], (16, 1)),
    )
    assert result.elements == truth
    assert result.standard_errors is None and result.positions is None
    np.testing.assert_allclose(result.posteriors.sum(axis=1), 1.0)
    sums = integrated_intensities(volume, snapped, SAMPLING, 1.0)
    assert np.all(sums > 0) and sums.shape == (16,)


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
        ({"reassign": True, "reassign_prior_floor": 1.5}, "reassign_prior_floor="),
        ({"reassign": True, "reassign_width_floor": -0.1}, "reassign_width_floor="),
        ({"reassign": True, "reassign_starts": 0}, "reassign_starts="),
        (
            {"reassign": True, "reassign_use_standard_errors": "yes"},
            "reassign_use_standard_errors=",
        ),
        ({"reassign": True, "reassign_volume_radius": 0}, "reassign_volume_radius="),
        ({"reassign": True, "reassign_scale_prior": -1.0}, "reassign_scale_prior="),
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
    # each row keeps its total; the elements' share now follows the posterior
    np.testing.assert_allclose(rows.sum(axis=1), probabilities.sum(axis=1))
    present = [classes.index(e) for e in ("Fe", "Cu", "Pt")]
    np.testing.assert_allclose(rows[:, present].sum(axis=1), probabilities[:, present].sum(axis=1))
    assert [classes[k] for k in rows.argmax(axis=1)] == truth
    assert extra["species_classes"] == ["Fe", "Cu", "Pt"]
    np.testing.assert_allclose(extra["species_posteriors"].sum(axis=1), 1.0)
    assert moved.shape == positions.shape and np.abs(moved - positions).max() < 0.5


def test_pann_species_step_is_a_no_op_for_one_element(monkeypatch):
    import models.species_refine
    from models.pann import PannConfig, PannModel
    from models.weights import DEFAULT_WEIGHTS

    model = PannModel.load(DEFAULT_WEIGHTS)

    def refit(*args, **kwargs):
        raise AssertionError("one element present: nothing to refit")

    monkeypatch.setattr(models.species_refine, "reassign_species", refit)
    sample, positions, truth = _sample()
    labels = ["Pt"] * len(truth)
    probabilities = _network_probabilities(list(model.config.classes), labels)
    extra = {}
    out = model._reassign(sample, positions, labels, probabilities, ["Pt"], extra)
    assert out[0] is positions and out[1] is labels and out[2] is probabilities and extra == {}
    # checkpoints written before the option existed predict as they did: no species step
    old = {k: v for k, v in model.config.to_dict().items() if k != "reassign"}
    assert PannConfig.from_dict(old).reassign is False
    assert get_method("pann", reassign=False).model.config.reassign is False


def test_prediction_file_carries_the_posterior_columns(tmp_path):
    import ase.io

    from models.io import species_arrays, write_prediction

    posteriors = np.array([[0.9, 0.1], [0.25, 0.75]])
    extra = {"species_posteriors": posteriors, "species_classes": ["Pd", "Pt"]}
    path = tmp_path / "pred.xyz"
    write_prediction(
        path,
        np.zeros((2, 3)),
        ["Pd", "Pt"],
        np.array([[0.5, 0.3, 0.2], [0.1, 0.6, 0.3]]),
        ["Pd", "Pt", "none"],
        {"sample": 0},
        species_arrays(extra),
    )
    atoms = ase.io.read(path)
    assert atoms.get_chemical_symbols() == ["Pd", "Pt"]
    np.testing.assert_allclose(atoms.arrays["element_posterior"], [0.9, 0.75])
    np.testing.assert_allclose(atoms.arrays["posterior_Pt"], [0.1, 0.75])
    np.testing.assert_allclose(atoms.arrays["prob_none"], [0.2, 0.3])
    assert species_arrays({}) == {}


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
        prediction = model.predict(volume, SAMPLING, ["Fe", "Cu", "Pt"])
    assert "['Fe', 'Cu']" in caplog.text and "tilt series" in caplog.text
    if len(prediction.elements):  # the volume's intensities named the atoms
        assert prediction.extra["species_source"] == "volume"
        posteriors = prediction.extra["species_posteriors"]
        np.testing.assert_allclose(posteriors.sum(axis=1), 1.0)
        classes = prediction.extra["species_classes"]
        assert [classes[k] for k in posteriors.argmax(axis=1)] == prediction.elements
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="models.pann"):
        model.predict(volume, SAMPLING, ["Fe", "Pt"])
    assert "tilt series" not in caplog.text
