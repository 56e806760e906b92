"""``X+refine`` methods through the benchmark runner on the real smoke store."""

import numpy as np
import pytest

from benchmark.methods import available_methods, get_method
from benchmark.runner import run_method


@pytest.mark.slow  # refines every smoke sample (minutes on a loaded 2-core machine)
def test_classical_refine_runs_through_the_runner_and_lowers_the_error(smoke_store, tmp_path):
    base = run_method("classical", smoke_store, tmp_path / "c.jsonl", split=None)
    refined = run_method("classical+refine", smoke_store, tmp_path / "r.jsonl", split=None)
    assert [r["index"] for r in refined] == [r["index"] for r in base]
    assert {r["method"] for r in refined} == {"classical+refine"}
    # Same atoms found (refinement moves atoms, never adds or drops them) ...
    assert [r["n_pred"] for r in refined] == [r["n_pred"] for r in base]
    # ... closer to the truth on the shot-noise-only samples (no geometry errors to gauge away).
    pairs = [
        (b["coordinate_error_pm"], r["coordinate_error_pm"])
        for b, r in zip(base, refined)
        if b["noise_model"] == "poisson"
    ]
    assert pairs
    before, after = np.array(pairs).T
    assert after.mean() < 0.7 * before.mean()


def test_any_method_has_a_refined_variant():
    assert {"classical+refine", "pann+refine"} <= set(available_methods())
    method = get_method("classical+refine", smooth=0.3, iterations=5)
    assert method.base_method.options["smooth"] == 0.3
    assert method.config.iterations == 5
    with pytest.raises(ValueError, match="nosuch"):
        get_method("nosuch+refine")
