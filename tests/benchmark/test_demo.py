"""``python -m benchmark.demo``: its options are checked before any work."""

from __future__ import annotations

import pytest

from benchmark import demo


@pytest.mark.parametrize("value", ["0", "-2"])
def test_eval_workers_must_be_positive(value, tmp_path, capsys):
    out = tmp_path / "demo-output"
    with pytest.raises(SystemExit) as exit_info:
        demo.main(["--out", str(out), "--eval-workers", value])
    assert exit_info.value.code == 2
    assert f"--eval-workers={value}: expected a positive integer" in capsys.readouterr().err
    assert not out.exists()  # nothing written


def test_default_eval_workers_is_one_per_usable_cpu():
    import os

    assert demo._cpus() == len(os.sched_getaffinity(0))
